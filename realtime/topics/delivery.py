"""One TopicSocket connection's deliveries, on the one delivery engine (``realtime.pubsub.delivery``).

Each subscription is a :class:`ChannelSink`, a :class:`~realtime.pubsub.delivery.DeliveryQueue` on
its :class:`realtime.Channel` whose frames are the protocol's ``{"op": "message", ...}`` envelopes;
with presence, a :class:`~realtime.pubsub.delivery.Listener` on the companion channel folds join/leave
frames into the same queue (:func:`presence_listener`).

The connection's :class:`Outbox` is the queues' drain: it is idle (so a published frame goes
straight to the transport) while no sink of it is ready, no send of it is in progress and no publish
of the connection's own awaits its reply. Otherwise its single task takes one frame from each ready
sink in turn, so a busy channel cannot starve the others, and its sends wait while the client's
buffer is full (backpressure, and the slow-consumer policy of ``realtime.flow``). While anything is
queued for the connection, nothing is written directly, so no frame overtakes one queued before it,
on any of the connection's channels.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from typing import Any

from ..encoding import SharedMessage, dumps, send_event
from ..frames import json_frame, text_frame
from ..pubsub.delivery import UNORDERED, DeliveryQueue, Listener
from .protocol import gap

logger = logging.getLogger("realtime.topics")

#: Marks a sink entry that is a ready-made presence frame, not a channel message.
PRESENCE = UNORDERED


class TopicFrames:
    """The encoders of one channel's message envelope: its ASGI event and its frame bytes.

    Built once per publish for a shared message, whatever the number of subscribers; there is one
    TopicFrames per channel name while anything uses it (a shared message's cache keeps it alive).
    """

    __slots__ = ("__weakref__", "_event", "_frame", "name")

    _by_name: weakref.WeakValueDictionary[str, TopicFrames] = weakref.WeakValueDictionary()

    def __init__(self, name: str) -> None:
        self.name = name
        # Bound once: the shared message's cache compares encoders by identity.
        self._event = self._build_event
        self._frame = self._build_frame

    @classmethod
    def for_channel(cls, name: str) -> TopicFrames:
        frames = cls._by_name.get(name)
        if frames is None:
            frames = cls._by_name[name] = cls(name)
        return frames

    def event(self, message: Any, message_id: Any) -> dict[str, Any]:
        """The ``websocket.send`` event of a message frame; shared by all subscribers for a SharedMessage."""
        if type(message) is SharedMessage:
            return message.encoded(self._event, message_id)
        return {"type": "websocket.send", "text": dumps(
            {"op": "message", "channel": self.name, "id": message_id, "data": message}
        )}

    def frame(self, message: Any, message_id: Any) -> bytes:
        """The frame bytes written by the direct path: a message envelope, or a presence frame as is."""
        if message_id is PRESENCE:
            return json_frame(message)
        if type(message) is SharedMessage:
            if message.first_encoder is self._frame and message.first_id == message_id:  # inline: this runs per socket
                return message.first_value
            return message.encoded(self._frame, message_id)
        return text_frame(self.event(message, message_id)["text"])

    def _build_event(self, message: SharedMessage, message_id: Any) -> dict[str, Any]:
        text = f'{{"op":"message","channel":{dumps(self.name)},"id":{dumps(message_id)},"data":{dumps(message)}}}'
        return {"type": "websocket.send", "text": text}

    def _build_frame(self, message: SharedMessage, message_id: Any) -> bytes:
        return text_frame(self.event(message, message_id)["text"])


def message_event(channel: str, message_id: str | None, message: Any) -> dict[str, Any]:
    """The ``websocket.send`` event of a message frame (a replayed message, for instance)."""
    return TopicFrames.for_channel(channel).event(message, message_id)


class ChannelSink(DeliveryQueue):
    """One subscription's pending frames: held until its reply and replay are out (:meth:`activate`)."""

    __slots__ = ("frames", "waiting")

    def __init__(self, outbox: Outbox, channel: str, maxlen: int) -> None:
        self.frames = TopicFrames.for_channel(channel)
        super().__init__(outbox, maxlen, self.frames.frame, held=True)
        #: True while the sink is in its outbox's ready line.
        self.waiting = False

    @property
    def outbox(self) -> Outbox:
        return self.drain  # type: ignore[return-value]

    def activate(self) -> None:
        """Start sending what arrived since the subscription began."""
        self.release()

    def next_event(self) -> dict[str, Any] | None:
        """The next frame to send (a gap first, when messages were dropped), or None when nothing is pending."""
        missed = self.missed()
        if missed:
            return send_event(gap(self.frames.name, missed))
        entry = self.take()
        if entry is None:
            return None
        message_id, message = entry
        if message_id is PRESENCE:
            return send_event(message)
        return self.frames.event(message, message_id)


def presence_listener(sink: ChannelSink) -> Listener:
    """What a presence channel's companion holds: join/leave frames go into the subscription's sink."""

    def offer_presence(message: Any, message_id: Any) -> None:
        sink.offer(message, PRESENCE)

    return Listener(offer_presence)


class Outbox:
    """The ready sinks of one connection, and the one task that sends their frames: their drain."""

    def __init__(self, send: Any, writer: Any = None, ws: Any = None) -> None:
        self._send = send
        #: The connection's direct writer (``ready()``/``write(frame)``), or None: the generic path only.
        self.writer = writer
        self.counter = ws
        self.ws = ws
        #: Sinks with something to send, in turn.
        self.ready_sinks: deque[ChannelSink] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self._sending = False
        self._held = 0
        #: True when nothing of the connection is queued or being sent (a direct write keeps order).
        self.idle = True
        #: Frames written by the direct path (the rest went through the task).
        self.direct = 0

    @property
    def sending(self) -> bool:
        """True while the task's send is in progress: nothing goes direct then."""
        return self._sending

    @sending.setter
    def sending(self, value: bool) -> None:
        self._sending = value
        self.idle = not value and not self._held and not self.ready_sinks

    @property
    def held(self) -> int:
        """Above 0 while the connection's own publish awaits its reply: its message goes after the
        reply, through the task, as on the generic path."""
        return self._held

    @held.setter
    def held(self, value: int) -> None:
        self._held = value
        self.idle = not value and not self._sending and not self.ready_sinks

    def wake(self, sink: ChannelSink) -> None:
        if not sink.waiting:
            self.schedule(sink)

    def schedule(self, sink: ChannelSink) -> None:
        sink.waiting = True
        self.ready_sinks.append(sink)
        self.idle = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def failed(self, sink: DeliveryQueue) -> None:
        logger.exception("Encoding a frame for a subscription failed; the subscription stops")

    def forget(self, sink: ChannelSink) -> None:
        """A subscription ended: drop its pending frames."""
        sink.closed = True
        sink.clear()
        if sink.waiting:
            sink.waiting = False
            try:
                self.ready_sinks.remove(sink)
            except ValueError:
                pass
            self.idle = not self._sending and not self._held and not self.ready_sinks

    async def run(self) -> None:
        """Send frames round-robin over the ready sinks until cancelled (or the send fails)."""
        ready = self.ready_sinks
        while True:
            if not ready:
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
                self._waiter = None
                continue
            sink = ready.popleft()
            event = sink.next_event()
            if sink.pending:
                ready.append(sink)
            else:
                sink.waiting = False
            if event is not None:
                self.sending = True
                try:
                    await self._send(event)
                finally:
                    self.sending = False
            else:
                self.idle = not self._sending and not self._held and not ready
