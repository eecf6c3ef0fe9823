"""What ``Channel.subscribe()`` and ``Channel.subscribe_queue()`` return, both bounded and drop-oldest.

- :class:`SubscriberQueue`: the raw ``asyncio.Queue`` of ``Channel.subscribe_queue()``; its items
  are the messages themselves, as in the specification.
- :class:`Subscription`: what ``Channel.subscribe()`` returns; an async iterator over a
  :class:`~realtime.pubsub.delivery.DeliveryQueue` (the one delivery engine, with no writer) that
  replays history when asked, reports drops, and unsubscribes itself however the loop ends.

When a queue is full the oldest message is dropped for the new one and ``dropped`` grows: nothing
is lost without being counted.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from ..ops.stats import stats
from .delivery import DeliveryQueue, Reader


class Source(Protocol):
    """What a Subscription needs of its Channel."""

    def attach(self, subscriber: Any) -> None: ...

    def detach(self, subscriber: Any) -> None: ...

    async def replay_after(self, last_id: str) -> tuple[deque[tuple[str, Any]], bool]: ...


@dataclass(frozen=True)
class Gap:
    """Yielded by ``subscribe(gaps=True)`` where messages were missed.

    ``missed`` is how many were dropped for a slow consumer, or None when history could not
    reach back to the requested ``last_id`` (the client should refetch its state).
    """

    missed: int | None

    def __post_init__(self) -> None:
        stats.gap(self.missed)


class SubscriberQueue(asyncio.Queue):
    """A subscriber's bounded queue; ``dropped`` counts messages discarded because it was full."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.dropped = 0

    def offer(self, message: Any, message_id: str | None) -> None:
        """Add without waiting, dropping the oldest message when full."""
        if self.full():
            self.get_nowait()
            self.dropped += 1
        self.put_nowait(message)


class Subscription:
    """``async for message in channel.subscribe(): ...``; cleans up on break, cancel or error.

    The channel holds the subscription's queue, never the Subscription itself, so a loop left with
    ``break`` drops the last reference to the Subscription and its ``__del__`` unsubscribes at once.
    """

    def __init__(
        self, channel: Source, maxsize: int, last_id: str | None = None, gaps: bool = False, with_ids: bool = False
    ) -> None:
        self.channel = channel
        self._reader = Reader()
        self._queue = DeliveryQueue(self._reader, maxsize, channel=channel)
        #: False when ``last_id`` was asked for and history no longer reached back to it.
        self.recovered = True
        #: The id of the last message yielded (history-enabled channels).
        self.last_id = last_id
        self._gaps = gaps
        self._with_ids = with_ids
        self._replay: deque[tuple[str, Any]] | None = None
        self._resume_from = last_id
        self._unrecovered_reported = False
        self._started = False
        self._closed = False

    @property
    def queue(self) -> DeliveryQueue:
        """The pending ``(id, message)`` entries (``len(subscription.queue.items)``)."""
        return self._queue

    @property
    def dropped(self) -> int:
        """Messages discarded because this subscriber fell behind."""
        return self._queue.dropped

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Any:
        if self._closed:
            raise StopAsyncIteration
        if not self._started:
            await self._start()
        try:
            if self._gaps and not self.recovered and not self._unrecovered_reported:
                self._unrecovered_reported = True  # report the unrecovered history once
                return Gap(None)
            if self._replay:
                message_id, message = self._replay.popleft()
                self.last_id = message_id
                return (message_id, message) if self._with_ids else message
            queue = self._queue
            while True:
                if self._gaps:
                    missed = queue.missed()
                    if missed:
                        return Gap(missed)
                entry = queue.take()
                if entry is None:  # park on one future, without a coroutine per message (hot path)
                    await self._reader.wait()
                    continue
                message_id, message = entry
                if message_id is not None:
                    self.last_id = message_id
                return entry if self._with_ids else message
        except BaseException:
            self.close()
            raise

    async def _start(self) -> None:
        self._started = True
        self.channel.attach(self._queue)  # live first, so nothing published during the replay is missed
        if self._resume_from is not None:
            replay, recovered = await self.channel.replay_after(self._resume_from)
            self._replay = replay
            self._queue.skip = {message_id for message_id, _ in replay} or None
            self.recovered = recovered
            stats.resumed(len(replay), recovered)

    def close(self) -> None:
        """Unsubscribe; idempotent."""
        if not self._closed:
            self._closed = True
            self._queue.close()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        if not self._started:
            await self._start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        # A loop left with `break` drops the iterator: unsubscribe then, not at some later GC.
        if not self._closed and self._started:
            self._closed = True
            try:
                self._queue.close()
            except Exception:  # noqa: S110 - interpreter shutdown; nothing left to clean
                pass
