"""History in a Redis Stream: the one source of order and ids for every process.

Delivery, local included, comes from each process's stream readers (:mod:`realtime.pubsub.readers`:
one blocking ``XREAD`` for every stream of the process; :meth:`StreamTransport.listen` registers one),
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
from .readers import stream_readers
from .transport import Fanout, Replay, until_positioned


class StreamTransport:
    """A history Channel with ``REDIS_URL``: publishes are ``XADD``, deliveries come from ``XREAD``."""

    def __init__(self, channel: Fanout, url: str) -> None:
        self.channel = channel
        self.readers = stream_readers(url)
        self.store = RedisHistory(url, channel.name, channel.history, client=self.readers.client)
        #: Set once the running reader knows where it reads from (its first ``last_id``).
        self.positioned: asyncio.Future[None] | None = None

    async def publish(self, message: Any) -> tuple[int, str | None]:
        """Appends to the stream; returns the local subscribers that will receive it from the reader."""
        try:
            message_id = await reach("history", self.channel.name, lambda: self.store.append(message))
        except BrokerUnavailable:
            self.channel.broker_errors += 1
            raise
        return self.channel.subscriber_count, message_id

    def listen(self) -> Any:
        """The reader's coroutine; whoever resumes from now on waits until it has its position."""
        self.positioned = asyncio.get_running_loop().create_future()
        return self._listen(self.positioned)

    async def replay_after(self, last_id: str) -> Replay:
        """The replay, read once the reader has its position: everything after that comes live, the rest
        is in the replay (the seam drops what is in both), so a message published while the reader
        starts cannot fall between the two."""
        await until_positioned(self)
        return await self.store.after(last_id)

    async def newest_id(self) -> str | None:
        newest = await self.store.last_id()
        return None if ids.parse(newest) == ids.START else newest

    async def _listen(self, positioned: asyncio.Future[None]) -> None:
        """This process's single reader of the channel's stream; Redis away: keep the position, retry."""
        try:
            await self._read(positioned)
        finally:
            if not positioned.done():
                positioned.set_result(None)

    async def _read(self, positioned: asyncio.Future[None]) -> None:
        """Registers the stream with the process's readers (one ``XREAD`` for many streams) and waits."""
        store, channel = self.store, self.channel
        delay = 0.1
        while True:
            try:
                last = await store.last_id()
                break
            except Exception as error:
                broker_state.failed("history", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

        def deliver(entry_id: str, message: Any) -> None:
            channel.deliver(SharedMessage(message) if type(message) is dict else message, entry_id)

        watch = self.readers.watch(store.key, last, deliver)
        positioned.set_result(None)
        try:
            await asyncio.Event().wait()  # until the last subscriber leaves (cancelled)
        finally:
            self.readers.unwatch(store.key, watch)
