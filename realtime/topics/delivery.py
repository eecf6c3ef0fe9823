"""One connection's deliveries: a bounded sink per subscription, drained by one task per connection.

Each subscription registers a :class:`ChannelSink` on its :class:`realtime.Channel` (and, with
presence, a :class:`PresenceSink` on the companion channel, writing into the same sink). ``offer``
is what the Channel's fan-out calls: a deque append, dropping the oldest message when the sink is
full (counted, then sent as a ``gap``), and a wake-up of the connection's :class:`Outbox`. The
outbox's single task takes one frame from each ready sink in turn, so a busy channel cannot starve
the others, and its sends wait while the client's buffer is full (backpressure).

The ``{"op": "message", ...}`` frame of a published dict is built once per publish, in the
SharedMessage every subscriber of that channel shares.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from ..encoding import SharedMessage, dumps, send_event
from .protocol import gap

#: Marks a sink entry that is a ready-made presence frame, not a channel message.
PRESENCE = object()


def message_event(channel: str, message_id: str | None, message: Any) -> dict[str, Any]:
    """The ``websocket.send`` event of a message frame; shared by all subscribers for a SharedMessage."""
    if type(message) is SharedMessage:
        cached = message._envelope
        if cached is not None and cached[1] == message_id and cached[0] == channel:
            return cached[2]
        text = f'{{"op":"message","channel":{dumps(channel)},"id":{dumps(message_id)},"data":{dumps(message)}}}'
        event = {"type": "websocket.send", "text": text}
        message._envelope = (channel, message_id, event)
        return event
    frame = {"op": "message", "channel": channel, "id": message_id, "data": message}
    return {"type": "websocket.send", "text": dumps(frame)}


class ChannelSink:
    """One subscription's pending frames; what its Channel holds."""

    __slots__ = (
        "__weakref__", "active", "channel", "dropped", "items", "maxlen", "outbox", "reported", "skip", "waiting",
    )

    def __init__(self, outbox: Outbox, channel: str, maxlen: int) -> None:
        self.outbox = outbox
        self.channel = channel
        self.maxlen = maxlen
        self.items: deque[tuple[Any, Any]] = deque()
        self.dropped = 0
        self.reported = 0
        #: Until the subscribe reply (and replay) are sent, offers are held, not scheduled.
        self.active = False
        self.waiting = False
        #: Ids already sent by the replay: their live copies are skipped once.
        self.skip: set[str] = set()

    def offer(self, message: Any, message_id: Any) -> None:
        items = self.items
        if len(items) >= self.maxlen:
            items.popleft()
            self.dropped += 1
        items.append((message_id, message))
        if self.active and not self.waiting:
            self.outbox.schedule(self)

    def activate(self) -> None:
        """Start sending what arrived since the subscription began."""
        self.active = True
        if self.items and not self.waiting:
            self.outbox.schedule(self)

    def next_event(self) -> dict[str, Any] | None:
        """The next frame to send, or None when nothing is pending."""
        if self.dropped > self.reported:
            missed = self.dropped - self.reported
            self.reported = self.dropped
            return send_event(gap(self.channel, missed))
        while self.items:
            message_id, message = self.items.popleft()
            if message_id is PRESENCE:
                return send_event(message)
            if self.skip:
                if message_id in self.skip:
                    continue
                self.skip = set()  # past the seam: later ids are all new
            return message_event(self.channel, message_id, message)
        return None


class PresenceSink:
    """What a presence channel's companion holds: join/leave frames go into the subscription's sink."""

    __slots__ = ("__weakref__", "sink")

    def __init__(self, sink: ChannelSink) -> None:
        self.sink = sink

    def offer(self, message: Any, message_id: Any) -> None:
        self.sink.offer(message, PRESENCE)


class Outbox:
    """The ready sinks of one connection, and the one task that sends their frames."""

    def __init__(self, send: Any) -> None:
        self._send = send
        self._ready: deque[ChannelSink] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None

    def schedule(self, sink: ChannelSink) -> None:
        sink.waiting = True
        self._ready.append(sink)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def forget(self, sink: ChannelSink) -> None:
        """A subscription ended: drop its pending frames."""
        sink.active = False
        sink.items.clear()
        if sink.waiting:
            sink.waiting = False
            try:
                self._ready.remove(sink)
            except ValueError:
                pass

    async def run(self) -> None:
        """Send frames round-robin over the ready sinks until cancelled (or the send fails)."""
        ready = self._ready
        while True:
            if not ready:
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
                self._waiter = None
                continue
            sink = ready.popleft()
            event = sink.next_event()
            if sink.items or sink.dropped > sink.reported:
                ready.append(sink)
            else:
                sink.waiting = False
            if event is not None:
                await self._send(event)
