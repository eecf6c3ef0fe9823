"""The two kinds of subscriber a Channel fans out to, both bounded and drop-oldest.

- :class:`SubscriberQueue`: the raw ``asyncio.Queue`` of ``Channel.subscribe_queue()``; its items
  are the messages themselves, as in the specification.
- :class:`Subscription`: what ``Channel.subscribe()`` returns; an async iterator that replays
  history when asked, reports drops, and unsubscribes itself however the loop ends.

When a queue is full the oldest message is dropped for the new one and ``dropped`` grows: nothing
is lost without being counted.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .ops.stats import stats

if TYPE_CHECKING:
    from .channel import Channel


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


class _SinkQueue:
    """A bounded FIFO for exactly the work a Subscription does: one producer call, one reader.

    ``asyncio.Queue`` is general (many getters and putters, ``join``/``task_done``, shutdown), and
    that generality costs on every message of a fan-out. Here ``offer`` is a deque append plus,
    when the reader is parked, one future completion; ``get`` parks on one future. It offers the
    read side of ``asyncio.Queue`` (``get``, ``get_nowait``, ``empty``, ``full``, ``qsize``,
    ``maxsize``) so ``Subscription.queue`` reads the same.
    """

    __slots__ = ("_items", "_waiters", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self._items: deque[tuple[str | None, Any]] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.maxsize = maxsize

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def get_nowait(self) -> tuple[str | None, Any]:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    async def get(self) -> tuple[str | None, Any]:
        items = self._items
        while not items:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                self._abandon(waiter)
                raise
        return items.popleft()

    def _abandon(self, waiter: asyncio.Future[None]) -> None:
        """A parked reader was cancelled: forget it, and pass on a wake-up it may have taken."""
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass
        if self._items and not waiter.cancelled():
            self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class _Sink:
    """What the channel holds for a Subscription: its queue, and nothing that keeps it alive.

    The channel references the sink, never the Subscription, so a loop left with ``break`` drops
    the last reference to the Subscription and its ``__del__`` unsubscribes at once.
    """

    __slots__ = ("__weakref__", "dropped", "queue")

    def __init__(self, maxsize: int) -> None:
        self.queue = _SinkQueue(maxsize)
        self.dropped = 0

    def offer(self, message: Any, message_id: str | None) -> None:
        queue = self.queue
        items = queue._items
        if len(items) >= queue.maxsize:
            items.popleft()
            self.dropped += 1
        items.append((message_id, message))
        if queue._waiters:
            queue._wake()


class Subscription:
    """``async for message in channel.subscribe(): ...``; cleans up on break, cancel or error."""

    def __init__(
        self, channel: Channel, maxsize: int, last_id: str | None = None, gaps: bool = False, with_ids: bool = False
    ) -> None:
        self.channel = channel
        self._sink = _Sink(maxsize)
        #: False when ``last_id`` was asked for and history no longer reached back to it.
        self.recovered = True
        #: The id of the last message yielded (history-enabled channels).
        self.last_id = last_id
        self._reported = 0
        self._gaps = gaps
        self._with_ids = with_ids
        self._replay: deque[tuple[str, Any]] | None = None
        self._replayed_ids: set[str] = set()
        self._resume_from = last_id
        self._started = False
        self._closed = False

    @property
    def queue(self) -> _SinkQueue:
        """The pending ``(id, message)`` pairs; reads like an ``asyncio.Queue``."""
        return self._sink.queue

    @property
    def dropped(self) -> int:
        """Messages discarded because this subscriber fell behind."""
        return self._sink.dropped

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Any:
        if self._closed:
            raise StopAsyncIteration
        if not self._started:
            await self._start()
        try:
            if self._gaps and not self.recovered and self._reported == 0 and self._resume_from is not None:
                self._reported = -1  # report the unrecovered history once
                return Gap(None)
            if self._replay:
                message_id, message = self._replay.popleft()
                self.last_id = message_id
                return (message_id, message) if self._with_ids else message
            queue = self._sink.queue
            while True:
                if self._gaps and self.dropped > max(self._reported, 0):
                    missed = self.dropped - max(self._reported, 0)
                    self._reported = self.dropped
                    return Gap(missed)
                items = queue._items
                if not items:  # park on one future, without a coroutine per message (hot path)
                    waiter = asyncio.get_running_loop().create_future()
                    queue._waiters.append(waiter)
                    try:
                        await waiter
                    except BaseException:
                        queue._abandon(waiter)
                        raise
                    if not items:
                        continue
                message_id, message = items.popleft()
                if message_id is not None and message_id in self._replayed_ids:
                    continue  # delivered from history already: no duplicate at the seam
                if message_id is not None:
                    self.last_id = message_id
                return (message_id, message) if self._with_ids else message
        except BaseException:
            self.close()
            raise

    async def _start(self) -> None:
        self._started = True
        self.channel.attach(self._sink)  # live first, so nothing published during the replay is missed
        if self._resume_from is not None:
            replay, recovered = await self.channel.replay_after(self._resume_from)
            self._replay = replay
            self._replayed_ids = {message_id for message_id, _ in replay}
            self.recovered = recovered
            stats.resumed(len(replay), recovered)

    def close(self) -> None:
        """Unsubscribe; idempotent."""
        if not self._closed:
            self._closed = True
            self.channel.detach(self._sink)

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
                self.channel.detach(self._sink)
            except Exception:  # noqa: S110 - interpreter shutdown; nothing left to clean
                pass
