"""One connection's deliveries: a bounded sink per subscription, drained by one task per connection.

Each subscription registers a :class:`ChannelSink` on its :class:`realtime.Channel` (and, with
presence, a :class:`PresenceSink` on the companion channel, writing into the same sink). ``offer``
is what the Channel's fan-out calls.

The direct path: when the connection has a direct writer (daphne and uvicorn, see
``realtime.servers``) and nothing of that connection is waiting
(no sink of it ready in the :class:`Outbox`, no send of the outbox in progress, no publish of the
connection's own awaiting its reply) and the transport has room, ``offer`` writes the frame bytes
straight to the transport, in the publisher's loop turn, with no task woken. The frame of a
published dict is built once per publish, cached on the SharedMessage every subscriber shares.

Otherwise the generic path: a deque append, dropping the oldest message when the sink is full
(counted, then sent as a ``gap``), and a wake-up of the connection's :class:`Outbox`. The outbox's
single task takes one frame from each ready sink in turn, so a busy channel cannot starve the
others, and its sends wait while the client's buffer is full (backpressure, and the slow-consumer
policy of ``realtime.flow``). While anything is queued for the connection, nothing is written
directly, so no frame overtakes one queued before it, on any of the connection's channels.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from ..encoding import SharedMessage, dumps, send_event
from ..frames import json_frame, text_frame
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


def message_frame(channel: str, message_id: str | None, message: Any) -> bytes:
    """The WebSocket frame bytes of a message frame; built once per publish for a SharedMessage."""
    if type(message) is SharedMessage:
        cached = message._topic_frame
        if cached is not None and cached[1] == message_id and cached[0] == channel:
            return cached[2]
        frame = text_frame(message_event(channel, message_id, message)["text"])
        message._topic_frame = (channel, message_id, frame)
        return frame
    return text_frame(message_event(channel, message_id, message)["text"])


def presence_frame(message: Any) -> bytes:
    """The frame bytes of a join/leave frame (published as is on the companion channel)."""
    return json_frame(message)


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
        if not items and self.active:
            outbox = self.outbox
            writer = outbox.writer
            if (writer is not None and not outbox._ready and not outbox.sending and not outbox.held
                    and self.dropped == self.reported and writer.ready()):
                if message_id is PRESENCE:
                    frame = presence_frame(message)
                else:
                    skip = self.skip
                    if skip:  # as next_event does: a replayed id is skipped once, then the seam is passed
                        if message_id in skip:
                            return
                        self.skip = set()
                    frame = message_frame(self.channel, message_id, message)
                writer.write(frame)
                outbox.ws.sent += 1  # counted as the ASGI path counts its sends (realtime.ops)
                outbox.direct += 1
                return
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

    def __init__(self, send: Any, writer: Any = None, ws: Any = None) -> None:
        self._send = send
        #: The connection's direct writer (``ready()``/``write(frame)``), or None: the generic path only.
        self.writer = writer
        self.ws = ws
        self._ready: deque[ChannelSink] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        #: True while the task's send is in progress: nothing goes direct then.
        self.sending = False
        #: Above 0 while the connection's own publish awaits its reply: its message goes after the
        #: reply, through the task, as on the generic path.
        self.held = 0
        #: Frames written by the direct path (the rest went through the task).
        self.direct = 0

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
                self.sending = True
                try:
                    await self._send(event)
                finally:
                    self.sending = False
