"""Ending or re-checking a user's open connections in every process: deactivation, logout,
``revoke_user``, and permissions that changed while connected (``recheck``).

Each process keeps the closers of its authenticated connections by user. A revocation is
published on a control Channel, so with ``REDIS_URL`` it reaches every process (one layer
subscription per process, as for any Channel); each process then closes that user's WebSockets
(4003 ``session_revoked``; 4001 with ``STRICT_TOKENS``) and ends their SSE streams with
``event: error`` ``session_revoked``.

A re-check travels the same way (``{"action": "recheck"}``): each process that holds connections
of the user loads the user once (per event loop) and hands it to each connection's rechecker
(``realtime.admission.Admitted``), which runs that connection's permission classes again; a
process holding none of the user's connections only looks the user up in a dict. Group changes
(``m2m_changed``) and saves of a user ask for one (``realtime.signals``), after the transaction
commits; :func:`recheck` and :func:`arecheck` are for the changes no signal sees.

While Redis is unreachable the publish raises ``BrokerUnavailable``; a revocation then still closes
the user's connections in *this* process and logs a warning that the other processes were not told
(logout and deactivation themselves succeed: they must not fail because Redis is away).

A revocation closes the connections that were open when it was made, not those opened after it:
its message carries the time it was made, and a process that receives it late (a slow broker, a
busy loop) still spares a connection the user opened since, such as the next login's. Processes on
several hosts compare their clocks, so keep them in sync (NTP).

Saving a user with ``is_active = False`` revokes through ``post_save``. ``QuerySet.update()`` and
raw SQL send no signal, so they close nothing: call :func:`revoke_user` for each user.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from .pubsub.broker import BrokerUnavailable
from .pubsub.channel import Channel
from .pubsub.delivery import Listener

logger = logging.getLogger("realtime.revocation")

CONTROL_CHANNEL = "realtime.revocations"

Closer = Callable[[], None]
#: A connection's rechecker: called, from any thread, with the user's :class:`FreshUser`.
Rechecker = Callable[["FreshUser"], None]


class FreshUser:
    """One user as the database has it now, loaded at most once per event loop for one re-check.

    Every connection of the user in a process shares the load (one query, not one per connection).
    """

    __slots__ = ("_loads", "pk")

    def __init__(self, pk: Any) -> None:
        self.pk = pk
        self._loads: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] = {}

    async def get(self) -> Any:
        """The user, or None when it no longer exists."""
        loop = asyncio.get_running_loop()
        load = self._loads.get(loop)
        if load is None:
            load = self._loads[loop] = loop.create_task(_load_user(self.pk), context=clean_context())
        return await asyncio.shield(load)  # one waiter cancelled does not cancel the others' load


def clean_context() -> contextvars.Context:
    """An empty context for a re-check's tasks: they are started by whoever published the re-check
    (a sync view's thread, a signal inside ``asave()``), whose context says its thread-sensitive
    executor is busy; carried into the task, it would make every ORM call raise "would deadlock"."""
    return contextvars.Context()


async def _load_user(pk: Any) -> Any:
    from django.contrib.auth import get_user_model

    model = get_user_model()
    return await model._default_manager.filter(pk=pk).afirst()


class Revocations:
    """This process's authenticated connections by user, and the control channel's subscriber."""

    def __init__(self) -> None:
        #: Each user's closers, with the time each connection registered and its rechecker (or None).
        self.closers: dict[Any, dict[Closer, tuple[float, Rechecker | None]]] = defaultdict(dict)
        self.channel = Channel(CONTROL_CHANNEL, maxlen=1000)
        self._subscribed = False
        #: The control channel's subscriber: every revocation and re-check, from any process, reaches ``on_message``.
        self.listener = Listener(self.on_message)

    def register(self, user_pk: Any, closer: Closer, recheck: Rechecker | None = None) -> Callable[[], None]:
        """Remember how to close (and re-check) one connection of ``user_pk``; returns the function that forgets it."""
        key = str(user_pk)
        self.closers[key][closer] = (time.time(), recheck)
        if not self._subscribed:
            self.channel.attach(self.listener)
            self._subscribed = True

        def unregister() -> None:
            closers = self.closers.get(key)
            if closers is not None:
                closers.pop(closer, None)
                if not closers:
                    del self.closers[key]
            if not self.closers and self._subscribed:
                self.channel.detach(self.listener)
                self._subscribed = False

        return unregister

    def on_message(self, message: Any, message_id: str | None) -> None:
        """A control message arrived (from this process or another): a revocation or a re-check."""
        if isinstance(message, dict) and message.get("action") == "recheck":
            self.on_recheck(message)
        else:
            self.on_revocation(message, message_id)

    def on_revocation(self, message: Any, message_id: str | None) -> None:
        """A revocation arrived (from this process or another): close that user's connections."""
        if not isinstance(message, dict) or message.get("action") != "revoke":
            return
        made = message.get("at")
        registered = self.closers.get(str(message.get("user")), {})
        closers = [closer for closer, (since, _) in list(registered.items())
                   if not isinstance(made, (int, float)) or since <= made]
        if closers:
            logger.info("Closing %d connection(s) of user %s (%s)", len(closers), message.get("user"),
                        message.get("reason"))
        for closer in closers:
            try:
                closer()
            except Exception:
                logger.exception("A connection could not be closed on revocation")

    def on_recheck(self, message: dict[str, Any]) -> None:
        """A re-check arrived: hand this process's connections of that user one shared :class:`FreshUser`.

        Every connection open when it arrives is re-checked, also one opened after the change (its
        admission may have read the old state).
        """
        registered = self.closers.get(str(message.get("user")), {})
        rechecks = [recheck for _, recheck in list(registered.values()) if recheck is not None]
        if not rechecks:
            return
        logger.info("Re-checking %d connection(s) of user %s (%s)", len(rechecks), message.get("user"),
                    message.get("reason"))
        fresh = FreshUser(message.get("user"))
        for recheck in rechecks:
            try:
                recheck(fresh)
            except Exception:
                logger.exception("A connection could not be re-checked")

    async def recheck(self, user_pk: Any, reason: str = "recheck") -> None:
        message = _recheck(user_pk, reason)
        try:
            await self.channel.publish(message)
        except BrokerUnavailable as error:
            self._here_only(message, error)

    def recheck_sync(self, user_pk: Any, reason: str = "recheck") -> None:
        message = _recheck(user_pk, reason)
        try:
            self.channel.publish_sync(message)
        except BrokerUnavailable as error:
            self._here_only(message, error)

    async def revoke(self, user_pk: Any, reason: str = "revoked") -> None:
        message = _revocation(user_pk, reason)
        try:
            await self.channel.publish(message)
        except BrokerUnavailable as error:
            self._here_only(message, error)

    def revoke_sync(self, user_pk: Any, reason: str = "revoked") -> None:
        message = _revocation(user_pk, reason)
        try:
            self.channel.publish_sync(message)
        except BrokerUnavailable as error:
            self._here_only(message, error)

    def _here_only(self, message: dict[str, Any], error: BrokerUnavailable) -> None:
        what = "Re-check" if message["action"] == "recheck" else "Revocation"
        logger.warning("%s of user %s reached this process only: %s", what, message["user"], error)
        self.on_message(message, None)


def _revocation(user_pk: Any, reason: str) -> dict[str, Any]:
    return {"action": "revoke", "user": str(user_pk), "reason": reason, "at": time.time()}


def _recheck(user_pk: Any, reason: str) -> dict[str, Any]:
    return {"action": "recheck", "user": str(user_pk), "reason": reason, "at": time.time()}


revocations = Revocations()


def revoke_user(user_pk: Any, reason: str = "revoked") -> None:
    """Close the user's WebSockets and SSE streams in this process and, over a shared layer, in all."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        revocations.revoke_sync(user_pk, reason)
        return
    raise RuntimeError("revoke_user() was called from async code: use 'await realtime.arevoke_user(pk)'")


async def arevoke_user(user_pk: Any, reason: str = "revoked") -> None:
    """``revoke_user`` for async code."""
    await revocations.revoke(user_pk, reason)


def recheck(user: Any, reason: str = "recheck") -> None:
    """Re-run the permissions of ``user``'s open connections (a user or its pk) in every process.

    For changes no signal sees: an object's owner changed, ``QuerySet.update()``, raw SQL, a
    permission that reads another model. A channel of a ``TopicSocket`` whose topic now refuses
    gets ``unsubscribed``; a view or SSE stream whose own permission now refuses is closed with
    4003 (SSE: ``event: error``) and the permission's message.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        revocations.recheck_sync(getattr(user, "pk", user), reason)
        return
    raise RuntimeError("recheck() was called from async code: use 'await realtime.arecheck(user)'")


async def arecheck(user: Any, reason: str = "recheck") -> None:
    """``recheck`` for async code."""
    await revocations.recheck(getattr(user, "pk", user), reason)


def close_soon(coroutine_function: Callable[[], Any]) -> Closer:
    """A closer that runs an async close on the connection's loop."""
    loop = asyncio.get_running_loop()

    def closer() -> None:
        loop.call_soon_threadsafe(lambda: loop.create_task(coroutine_function()))

    return closer
