"""History in a Redis Stream: the one source of order and ids for every process.

Delivery, local included, comes from each process's stream reader (:meth:`StreamTransport.listen`),
so every subscriber everywhere sees the ids in the same increasing order: two processes publishing
at once cannot interleave differently on different subscribers, which would break resuming.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..encoding import SharedMessage
from . import ids
from .broker import BrokerUnavailable, broker_state, reach
from .history import RedisHistory
from .transport import Fanout, Replay


class StreamTransport:
    """A history Channel with ``REDIS_URL``: publishes are ``XADD``, deliveries come from ``XREAD``."""

    def __init__(self, channel: Fanout, url: str) -> None:
        self.channel = channel
        self.store = RedisHistory(url, channel.name, channel.history)
        self.listen = self._listen

    async def publish(self, message: Any) -> tuple[int, str | None]:
        """Appends to the stream; returns the local subscribers that will receive it from the reader."""
        try:
            message_id = await reach("history", self.channel.name, lambda: self.store.append(message))
        except BrokerUnavailable:
            self.channel.broker_errors += 1
            raise
        return self.channel.subscriber_count, message_id

    async def replay_after(self, last_id: str) -> Replay:
        return await self.store.after(last_id)

    async def newest_id(self) -> str | None:
        newest = await self.store.last_id()
        return None if ids.parse(newest) == ids.START else newest

    async def _listen(self) -> None:
        """This process's single reader of the channel's stream; Redis away: keep the position, retry."""
        store, channel = self.store, self.channel
        last: str | None = None
        delay = 0.1
        while True:
            try:
                if last is None:
                    last = await store.last_id()
                for entry_id, message in await store.read_after(last, block_ms=5000):
                    last = entry_id
                    if type(message) is dict:
                        message = SharedMessage(message)
                    channel.deliver(message, entry_id)
                if not broker_state.up:
                    broker_state.recovered()
                delay = 0.1
            except Exception as error:
                broker_state.failed("history", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
