"""Closing a user's open connections in every process: deactivation, logout, ``revoke_user``.

Each process keeps the closers of its authenticated connections by user. A revocation is
published on a control Channel, so with ``REDIS_URL`` it reaches every process (one layer
subscription per process, as for any Channel); each process then closes that user's WebSockets
(4003 ``session_revoked``; 4001 with ``STRICT_TOKENS``) and ends their SSE streams with
``event: error`` ``session_revoked``.

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


class Revocations:
    """This process's authenticated connections by user, and the control channel's subscriber."""

    def __init__(self) -> None:
        #: Each user's closers, with the time each connection registered.
        self.closers: dict[Any, dict[Closer, float]] = defaultdict(dict)
        self.channel = Channel(CONTROL_CHANNEL, maxlen=1000)
        self._subscribed = False
        #: The control channel's subscriber: every revocation, from any process, reaches ``on_revocation``.
        self.listener = Listener(self.on_revocation)

    def register(self, user_pk: Any, closer: Closer) -> Callable[[], None]:
        """Remember how to close one connection of ``user_pk``; returns the function that forgets it."""
        key = str(user_pk)
        self.closers[key][closer] = time.time()
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
        #: The control channel's subscriber: every revocation, from any process, reaches ``on_revocation``.
        self.listener = Listener(self.on_revocation)

        return unregister

    def on_revocation(self, message: Any, message_id: str | None) -> None:
        """A revocation arrived (from this process or another): close that user's connections."""
        if not isinstance(message, dict) or message.get("action") != "revoke":
            return
        made = message.get("at")
        registered = self.closers.get(str(message.get("user")), {})
        closers = [closer for closer, since in list(registered.items())
                   if not isinstance(made, (int, float)) or since <= made]
        if closers:
            logger.info("Closing %d connection(s) of user %s (%s)", len(closers), message.get("user"),
                        message.get("reason"))
        for closer in closers:
            try:
                closer()
            except Exception:
                logger.exception("A connection could not be closed on revocation")

    async def revoke(self, user_pk: Any, reason: str = "revoked") -> None:
        message = _revocation(user_pk, reason)
        try:
            await self.channel.publish(message)
        except BrokerUnavailable as error:
            self._revoke_here_only(message, error)

    def revoke_sync(self, user_pk: Any, reason: str = "revoked") -> None:
        message = _revocation(user_pk, reason)
        try:
            self.channel.publish_sync(message)
        except BrokerUnavailable as error:
            self._revoke_here_only(message, error)

    def _revoke_here_only(self, message: dict[str, Any], error: BrokerUnavailable) -> None:
        logger.warning("Revocation of user %s reached this process only: %s", message["user"], error)
        self.on_revocation(message, None)


def _revocation(user_pk: Any, reason: str) -> dict[str, Any]:
    return {"action": "revoke", "user": str(user_pk), "reason": reason, "at": time.time()}


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


def close_soon(coroutine_function: Callable[[], Any]) -> Closer:
    """A closer that runs an async close on the connection's loop."""
    loop = asyncio.get_running_loop()

    def closer() -> None:
        loop.call_soon_threadsafe(lambda: loop.create_task(coroutine_function()))

    return closer
