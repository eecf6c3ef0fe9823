"""The one delivery engine: a subscriber's bounded, drop-oldest queue, with the direct write.

Every kind of subscriber a connection holds (a WebSocket relay, an SSE relay, each ``TopicSocket``
subscription, a ``subscribe()`` iterator) is a :class:`DeliveryQueue` attached to a Channel. The
Channel's fan-out calls :meth:`DeliveryQueue.offer` in the publisher's turn, and one of two things
happens:

- **the direct write**: when nothing of the queue is pending, the queue is not held, no drop is
  still to be reported, and its :class:`Drain` (the connection) is idle and has a writer, the
  message's frame is built by the queue's encoder (once per publish for a shared message, see
  ``SharedMessage.encoded``) and handed to the loop's :class:`WriteBatch`, which writes a
  connection's first frame of the turn at once if its transport has room, and the turn's later
  ones in **one** write at the end of the turn (or before any ASGI send of the loop, so nothing
  overtakes them); those that then find no room go back to the front of their queues, for the
  drain. No task wakes, no ASGI hop.
- otherwise **the queue**: the message is appended, dropping the oldest one when the queue is full
  (``dropped`` counts them: the drain reports a gap before the next message), and the drain is woken.
  The drain sends what is queued through the ordinary path, which waits for the client and applies
  the slow-consumer policy (``realtime.flow``).

Order is kept: nothing goes direct while anything of the connection is queued or being sent.

A queue can be **held** (a subscription whose reply and replay are not sent yet): offers are
queued, never written nor woken, until :meth:`DeliveryQueue.release`. Ids in ``skip`` (those a
replay already sent; a :class:`Seam` adds every id up to a snapshot's) are dropped once at the seam,
whether they arrive before or after it.

A :class:`Listener` is the other subscriber kind: a function called with every message (revocations,
presence frames folded into a subscription's queue).
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Callable, Container, Iterable
from typing import Any, Protocol

from . import ids

#: The id of an entry outside the channel's own sequence (a presence frame folded into a topic
#: subscription): never skipped, and it does not move the replay seam.
UNORDERED: Any = object()


class Seam:
    """The ids a new subscriber holds already: its replay's and, after a snapshot, every id up to the
    snapshot's (``through``), so a live copy of a message the snapshot includes is not sent again.

    Live copies arrive in history order, so once one id is not in the seam, none after it is.
    """

    __slots__ = ("ids", "through")

    def __init__(self, replayed: Iterable[str], through: str | None = None) -> None:
        self.ids = set(replayed)
        #: ``(epoch, n)`` of the snapshot's id (``realtime.pubsub.ids``), or None.
        self.through = ids.parse(through) if through is not None else None

    def __contains__(self, message_id: object) -> bool:
        if message_id in self.ids:
            return True
        through = self.through
        if through is None:
            return False
        parsed = ids.parse(message_id)
        # Live copies come from the snapshot's own history, where ids order as (first, second) pairs:
        # a Redis Stream's first part is a millisecond that changes between messages (comparing it
        # for equality, as an epoch, sent every message of an earlier millisecond twice), and a
        # newer memory epoch is greater, so an id from after a restart is never taken for held.
        return parsed is not None and parsed <= through


class Writer(Protocol):
    """Writes ready-made bytes (a WebSocket frame, an SSE frame) to one connection's transport.

    ``realtime.servers`` finds one for a connection on the servers it knows.
    """

    def ready(self) -> bool:
        """True while the connection is open and its transport has room: write now, or use ASGI."""

    def write(self, data: bytes) -> None:
        """Hand ``data`` to the transport, whole."""


class WriteBatch:
    """The direct writes of one event loop's turn, per writer: two writes per connection per turn, not one per frame.

    A publish fanned out to many channels in one turn (a TopicSocket on 100 channels), or several
    messages read from the broker in one turn, gives a connection several frames: written one by
    one, each costs a system call (uvicorn, daphne's direct send). A connection's first frame of a
    turn is written at once (one frame per turn, the common case, costs no more than before); the
    rest of the turn's are joined and written once, when the turn's callbacks are done
    (``call_soon``), or earlier, before any ASGI send of this loop (:func:`flush_writes`, called by
    ``realtime.flow.SendGuard``): so a reply sent after a publish never overtakes the publish's frame.
    (More only past ``FLUSH_AT`` frames, or when an ASGI send flushes mid-turn.) A frame whose queue
    closed meanwhile (an unsubscribe) is dropped; a connection whose transport has no room (or is
    closing) gets its frames back at the front of their queues, for its drain's ASGI path, as if they
    had never gone direct.
    """

    __slots__ = ("__weakref__", "entries", "written")

    def __init__(self) -> None:
        #: writer -> its ``(queue, message_id, message, frame)`` entries of this turn after its first, in order.
        self.entries: dict[Writer, list[tuple[DeliveryQueue, Any, Any, bytes]]] = {}
        #: Writers that wrote their first frame of this turn at once.
        self.written: set[Writer] = set()

    def add(self, writer: Writer, queue: DeliveryQueue, message_id: Any, message: Any, frame: bytes) -> bool:
        """Write ``frame`` now if it is ``writer``'s first of this turn, else keep it for the turn's one write
        of the rest; False (nothing taken) when the writer has no room: the caller queues it, for the drain."""
        entries = self.entries
        pending = entries.get(writer)
        if pending is not None:
            pending.append((queue, message_id, message, frame))
            if len(pending) >= FLUSH_AT:  # a publisher that never yields: bound what one turn holds
                del entries[writer]
                _write(writer, pending)
            return True
        if not writer.ready():
            return False
        written = self.written
        if writer in written:
            entries[writer] = [(queue, message_id, message, frame)]
            return True
        if not written:
            asyncio.get_running_loop().call_soon(self.flush)
        written.add(writer)
        writer.write(frame)  # one frame per turn (the common case) costs what an immediate write does
        drain = queue.drain
        drain.counter.sent += 1  # counted as the ASGI path counts its sends (realtime.ops)
        drain.direct += 1
        return True

    def flush(self) -> None:
        """Write what this turn gave each connection after its first frame; the turn is over. Idempotent."""
        self.written.clear()
        entries = self.entries
        if entries:
            self.entries = {}
            for writer, pending in entries.items():
                _write(writer, pending)


#: Frames one connection's write carries at most: past it, the batch writes at once.
FLUSH_AT = 64


def _write(writer: Writer, pending: list[tuple[DeliveryQueue, Any, Any, bytes]]) -> None:
    """One write of ``pending`` (minus closed queues'), or back to their queues when there is no room."""
    if len(pending) == 1:
        live = pending if not pending[0][0].closed else []
    else:
        live = [entry for entry in pending if not entry[0].closed]
    if not live:
        return
    if writer.ready():
        writer.write(live[0][3] if len(live) == 1 else b"".join([entry[3] for entry in live]))
        drain = live[0][0].drain
        drain.counter.sent += len(live)  # counted as the ASGI path counts its sends (realtime.ops)
        drain.direct += len(live)
        return
    back: dict[DeliveryQueue, list[tuple[Any, Any]]] = {}
    for queue, message_id, message, _ in live:
        back.setdefault(queue, []).append((message_id, message))
    for queue, returned in back.items():
        queue.requeue(returned)


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WriteBatch] = weakref.WeakKeyDictionary()


def write_batch() -> WriteBatch | None:
    """The running loop's :class:`WriteBatch`, or None outside a loop (then writes are immediate)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = WriteBatch()
    return batch


def flush_writes() -> None:
    """Write the running loop's pending direct frames now (before an ASGI send, which must not overtake them)."""
    if _batches:
        try:
            batch = _batches.get(asyncio.get_running_loop())
        except RuntimeError:
            return
        if batch is not None and batch.entries:
            entries, batch.entries = batch.entries, {}
            for writer, pending in entries.items():
                _write(writer, pending)


class Drain(Protocol):
    """The consumer side of one connection's queues."""

    #: The connection's direct writer, or None (another server, direct writes off).
    writer: Writer | None
    #: True when nothing of the connection is queued or being sent: a direct write keeps order.
    idle: bool
    #: Frames written directly; ``counter.sent`` counts them for realtime.ops as well.
    direct: int
    counter: Any

    def wake(self, queue: DeliveryQueue) -> None:
        """``queue`` has something to send."""

    def failed(self, queue: DeliveryQueue) -> None:
        """The queue's transform or encoder raised on a message (the error is being handled)."""


class DeliveryQueue:
    """One subscription's pending ``(id, message)`` entries, and the direct write."""

    __slots__ = ("__weakref__", "batch", "channel", "closed", "drain", "dropped", "encoder", "held", "items",
                 "maxlen", "reported", "skip", "transform")

    def __init__(
        self, drain: Drain, maxlen: int, encoder: Callable[[Any, Any], bytes] | None = None, *,
        channel: Any = None, transform: Callable[[Any], Any] | None = None, held: bool = False,
    ) -> None:
        self.drain = drain
        self.maxlen = maxlen
        #: ``encoder(message, message_id)``: the frame bytes written directly (a drain with a writer needs one).
        self.encoder = encoder
        #: The Channel this queue is attached to, detached from by :meth:`close`.
        self.channel = channel
        #: Called on each message before anything else; None skips it.
        self.transform = transform
        self.held = held
        #: Pending entries. An empty deque costs 760 bytes, so a queue that has never been pushed
        #: back shares this empty tuple instead (idle memory per socket).
        self.items: deque[tuple[Any, Any]] | tuple[()] = ()
        self.dropped = 0
        self.reported = 0
        #: Ids a replay already sent (a set, or a :class:`Seam`), dropped once when their live copies arrive.
        self.skip: Container[str] | None = None
        self.closed = False
        #: The loop's batch of direct writes (None outside a loop: a direct write is then immediate).
        self.batch = write_batch() if encoder is not None else None

    def offer(self, message: Any, message_id: Any) -> None:
        """Called by the Channel for each published message, in the publisher's turn."""
        if self.closed:
            return
        skip = self.skip
        if skip is not None and not self.held and message_id is not UNORDERED:
            if message_id in skip:
                return
            if not self.items:  # past the seam: later ids are all new (queued ones are take()'s to check)
                self.skip = None
        if self.transform is not None:
            try:
                message = self.transform(message)
            except Exception:
                self.fail()
                return
            if message is None:
                return
        items = self.items
        if not items and not self.held and self.dropped == self.reported:
            drain = self.drain
            writer = drain.writer
            if writer is not None and drain.idle:
                batch = self.batch
                if batch is not None or writer.ready():
                    try:
                        frame = self.encoder(message, message_id)
                    except Exception:
                        self.fail()
                        return
                    if batch is None:  # outside a loop: written at once
                        writer.write(frame)
                        drain.counter.sent += 1  # counted as the ASGI path counts its sends (realtime.ops)
                        drain.direct += 1
                        return
                    if batch.add(writer, self, message_id, message, frame):
                        return
        if type(items) is not deque:
            items = self.items = deque()
        elif len(items) >= self.maxlen:
            items.popleft()
            self.dropped += 1
        items.append((message_id, message))
        if not self.held:
            self.drain.wake(self)

    def take(self) -> tuple[Any, Any] | None:
        """The next ``(id, message)`` to send, or None; replayed ids are skipped."""
        items = self.items
        while items:
            message_id, message = items.popleft()
            skip = self.skip
            if skip is not None and message_id is not UNORDERED:
                if message_id in skip:
                    continue
                self.skip = None
            return message_id, message
        return None

    def requeue(self, entries: list[tuple[Any, Any]]) -> None:
        """``(id, message)`` entries handed to the direct write that could not go (no room): back to the
        front of the queue, in order, before anything queued since; the oldest dropped past ``maxlen``."""
        if self.closed:
            return
        items: deque[tuple[Any, Any]] = deque(entries)
        if self.items:
            items.extend(self.items)
        while len(items) > self.maxlen:
            items.popleft()
            self.dropped += 1
        self.items = items
        if not self.held:
            self.drain.wake(self)

    def missed(self) -> int:
        """Messages dropped since the last call (a gap to report before the next message)."""
        missed = self.dropped - self.reported
        if missed:
            self.reported = self.dropped
        return missed

    def qsize(self) -> int:
        """Messages waiting (as ``asyncio.Queue.qsize``)."""
        return len(self.items)

    def empty(self) -> bool:
        return not self.items

    @property
    def pending(self) -> bool:
        """True while a message or a gap waits to be sent."""
        return bool(self.items) or self.dropped > self.reported

    def release(self, skip: Container[str] | None = None) -> None:
        """Stop holding: what arrived meanwhile goes to the drain (minus ``skip``, the replayed ids)."""
        if skip:
            self.skip = skip
        self.held = False
        if self.pending:
            self.drain.wake(self)

    def clear(self) -> None:
        """Drop what is pending (the drain may still hold the deque)."""
        if type(self.items) is deque:
            self.items.clear()
        self.items = ()

    def close(self) -> None:
        """Detach from the channel and drop what is pending; idempotent."""
        self.closed = True
        self.clear()
        if self.channel is not None:
            self.channel.detach(self)

    def fail(self) -> None:
        """The transform or the encoder raised on a message: stop, and let the drain end its connection."""
        flush_writes()  # what was taken for the direct write before the failure goes, as if written at once
        self.close()
        self.drain.failed(self)


class Reader:
    """The drain of one consumer that awaits its queue itself (``subscribe()``, an SSE relay body)."""

    __slots__ = ("counter", "direct", "error", "idle", "waiter", "writer")

    def __init__(self, writer: Writer | None = None, counter: Any = None) -> None:
        self.writer = writer
        #: False while the consumer is busy sending (its owner keeps it so).
        self.idle = True
        self.direct = 0
        self.counter = counter
        self.waiter: asyncio.Future[None] | None = None
        #: True once a queue of this reader failed; its owner ends the connection.
        self.error = False

    def wake(self, queue: DeliveryQueue | None = None) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def failed(self, queue: DeliveryQueue) -> None:
        self.error = True
        self.wake()

    async def wait(self, timeout: float | None = None) -> None:
        """Park until woken (or ``timeout`` seconds: ``TimeoutError``)."""
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self.waiter
        finally:
            self.waiter = None


class Listener:
    """A subscriber that calls ``callback(message, message_id)`` in the publisher's turn."""

    __slots__ = ("__weakref__", "callback")

    def __init__(self, callback: Callable[[Any, Any], None]) -> None:
        self.callback = callback

    def offer(self, message: Any, message_id: Any) -> None:
        self.callback(message, message_id)
