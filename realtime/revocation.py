"""Closing a user's open connections in every process: deactivation and logout.

Each process keeps the closers of its authenticated connections by user. A revocation is
published on a control Channel, so with ``REDIS_URL`` it reaches every process (one layer
subscription per process, as for any Channel); each process then closes that user's WebSockets
with 4001 and ends their SSE streams with an ``event: error``.

While Redis is unreachable the publish raises ``BrokerUnavailable``; a revocation then still closes
the user's connections in *this* process and logs a warning that the other processes were not told
(logout and deactivation themselves succeed: they must not fail because Redis is away).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from .broker import BrokerUnavailable
from .channel import Channel

logger = logging.getLogger("realtime.revocation")

CONTROL_CHANNEL = "realtime.revocations"

Closer = Callable[[], None]


class Revocations:
    """This process's authenticated connections by user, and the control channel's subscriber."""

    def __init__(self) -> None:
        self.closers: dict[Any, set[Closer]] = defaultdict(set)
        self.channel = Channel(CONTROL_CHANNEL, maxlen=1000)
        self._subscribed = False

    def register(self, user_pk: Any, closer: Closer) -> Callable[[], None]:
        """Remember how to close one connection of ``user_pk``; returns the function that forgets it."""
        key = str(user_pk)
        self.closers[key].add(closer)
        if not self._subscribed:
            self.channel._add(self)  # this object is the subscriber: offer() runs on every message
            self._subscribed = True

        def unregister() -> None:
            closers = self.closers.get(key)
            if closers is not None:
                closers.discard(closer)
                if not closers:
                    del self.closers[key]
            if not self.closers and self._subscribed:
                self.channel._remove(self)
                self._subscribed = False

        return unregister

    def offer(self, message: Any, message_id: str | None) -> None:
        """A revocation arrived (from this process or another): close that user's connections."""
        if not isinstance(message, dict) or message.get("action") != "revoke":
            return
        closers = list(self.closers.get(str(message.get("user")), ()))
        if closers:
            logger.info("Closing %d connection(s) of user %s (%s)", len(closers), message.get("user"),
                        message.get("reason"))
        for closer in closers:
            try:
                closer()
            except Exception:
                logger.exception("A connection could not be closed on revocation")

    async def revoke(self, user_pk: Any, reason: str = "revoked") -> None:
        message = {"action": "revoke", "user": str(user_pk), "reason": reason}
        try:
            await self.channel.publish(message)
        except BrokerUnavailable as error:
            self._revoke_here_only(message, error)

    def revoke_sync(self, user_pk: Any, reason: str = "revoked") -> None:
        message = {"action": "revoke", "user": str(user_pk), "reason": reason}
        try:
            self.channel.publish_sync(message)
        except BrokerUnavailable as error:
            self._revoke_here_only(message, error)

    def _revoke_here_only(self, message: dict[str, str], error: BrokerUnavailable) -> None:
        logger.warning("Revocation of user %s reached this process only: %s", message["user"], error)
        self.offer(message, None)


revocations = Revocations()


def close_soon(coroutine_function: Callable[[], Any]) -> Closer:
    """A closer that runs an async close on the connection's loop."""
    loop = asyncio.get_running_loop()

    def closer() -> None:
        loop.call_soon_threadsafe(lambda: loop.create_task(coroutine_function()))

    return closer
