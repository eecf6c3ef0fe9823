"""The direct delivery path for SSE: an ``SSEView`` with ``relay = channel``, or whose ``stream()`` only
forwards one as ``{"data": message}`` (``realtime.forwarding``; the ``plain`` form below).

It streams what ``follow(channel)`` streams (ids, resume after ``Last-Event-ID`` with ``event:
reset`` when history cannot reach back, ``event: reset`` with ``missed`` after drops), without the
generic path's two tasks and two queues per stream. The stream's queue is the one delivery engine's
(:class:`~realtime.pubsub.delivery.DeliveryQueue`): when a message is published, it writes the SSE
frame, built once per publish and cached on the shared message, straight to the response (the
writer ``realtime.servers`` finds on daphne and on uvicorn's ``httptools`` protocol), in the
publisher's turn.

When it cannot (another server, a transport pushing back, a frame still on its way through
Django), messages wait in the bounded drop-oldest queue that the response body itself drains through
Django's ``send``, which waits for the client and is bounded by the slow-consumer policy
(``realtime.flow``). Order is kept: nothing is written directly while a frame is queued or being
sent. Token expiry, revocation, shutdown and pings behave as on every SSE stream.

A ``relay_message`` that raises, or returns what JSON cannot encode, ends that stream as a failing
``stream()`` does: the error is logged and the client gets ``event: error`` (``internal_error``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from . import lifecycle
from .encoding import SharedMessage
from .memory import open_connections
from .ops.connections import track_sse
from .ops.stats import stats
from .pubsub.delivery import DeliveryQueue, Reader
from .sealed_ids import IdSeal
from .sse_encoder import FAILED, OPENED, PING, SHUTDOWN, data_frame, encode_event, encode_item
from .threads import release_request_thread

logger = logging.getLogger("realtime.relay")


class RelayFrames:
    """The encoder of one ``relay_event``: a message's SSE frame with its id, once per publish."""

    __slots__ = ("encode", "event")

    _by_event: dict[str | None, RelayFrames] = {}

    def __init__(self, event: str | None) -> None:
        self.event = event
        #: The bound method, made once: the shared message's cache compares encoders by identity.
        self.encode = self._encode

    @classmethod
    def for_event(cls, event: str | None) -> RelayFrames:
        """One encoder per event name (names come from view classes: a handful per project)."""
        frames = cls._by_event.get(event)
        if frames is None:
            frames = cls._by_event[event] = cls(event)
        return frames

    def __call__(self, message: Any, message_id: Any) -> bytes:
        if type(message) is SharedMessage:
            if message.first_encoder is self.encode and message.first_id == message_id:  # inline: this runs per stream
                return message.first_value
            return message.encoded(self.encode, message_id)
        return self._encode(message, message_id)

    def _encode(self, message: Any, message_id: Any) -> bytes:
        return sse_frame(self.event, message, message_id)


class SealedFrames:
    """The encoder of one stream whose ids are sealed: its frames are its own, never cached on the message."""

    __slots__ = ("event", "seal")

    def __init__(self, event: str | None, seal: IdSeal) -> None:
        self.event = event
        self.seal = seal

    def __call__(self, message: Any, message_id: Any) -> bytes:
        return sse_frame(self.event, message, None if message_id is None else self.seal.seal(message_id))


def sse_frame(event: str | None, message: Any, message_id: str | None) -> bytes:
    """The SSE frame of a relayed message: what ``follow()`` yields for it, encoded."""
    item: dict[str, Any] = {"data": message if isinstance(message, (str, dict, list)) else str(message)}
    if event is not None:
        item["event"] = event
    if message_id is not None:
        item["id"] = message_id
    return encode_item(item)


class StreamDrain(Reader):
    """One relay stream's drain: the response body, which reads the queue itself; and how it ends."""

    __slots__ = ("ended",)

    def __init__(self, writer: Any, counter: Any) -> None:
        super().__init__(writer, counter)
        self.idle = False  # until the body waits for its first message (the replay goes first)
        #: The last frame, once the stream must end (shutdown, revocation, expiry, a failed hook).
        self.ended: bytes | None = None

    def end(self, frame: bytes) -> None:
        """End the stream with ``frame`` (thread-safe callers go through the loop)."""
        if self.ended is None:
            self.ended = frame
            self.wake()

    def failed(self, queue: DeliveryQueue) -> None:
        """The view's hook failed on a message: log it and end the stream with ``internal_error``."""
        logger.exception("Unhandled error relaying an SSE stream: the client gets event: error (internal_error)")
        self.end(FAILED)


def _reset(missed: int | None, last_id: str | None) -> bytes:
    return encode_event({"missed": missed, "last_id": last_id}, event="reset").encode()


def _ended(data: dict[str, str]) -> bytes:
    return encode_event(data, event="error").encode()


async def relay_body(
    view: Any, channel: Any, writer_of: Any, ping_interval: float | None, admitted: Any = None, plain: bool = False,
) -> AsyncIterator[bytes]:
    """The response body of a relay stream; ``writer_of()`` gives the direct writer once headers are out.

    ``admitted`` (realtime.admission) is held while the stream is open: a revocation or the token's
    expiry ends it with ``event: error``, and it is released however the stream ends.

    ``plain``: the stream of a ``stream()`` that only forwards ``channel.subscribe()`` as ``{"data":
    message}`` (``realtime.forwarding``), with that generator's frames: no ids, no resume after
    ``Last-Event-ID``, and drops unsignalled (a subscription without ``gaps=True``); ``relay_message``
    is not the generator's and is not called.
    """
    yield OPENED
    release_request_thread()
    record = track_sse()
    drain = StreamDrain(writer_of(), record)
    transform = None if plain else view.relay_transform()
    seal = None if plain else view.id_seal(channel, transform is not None)
    encoder: Any
    if plain:
        encoder = data_frame
    elif seal is None:
        encoder = RelayFrames.for_event(view.relay_event)
    else:
        encoder = SealedFrames(view.relay_event, seal)
    queue = DeliveryQueue(drain, channel.maxlen, encoder, channel=channel, transform=transform)
    resume = view.last_event_id if channel.history and not plain else None
    forget_shutdown = lifecycle.on_shutdown(lambda: drain.end(SHUTDOWN))
    if admitted is not None:
        admitted.hold(lambda code: drain.end(_ended(admitted.error_data(code))))
    interval = ping_interval if ping_interval and ping_interval > 0 else None
    open_connections.opened()
    channel.attach(queue)  # live first, so nothing published during the replay is missed
    try:
        if resume is not None:
            last_id = resume if seal is None else (seal.open(resume) or "")  # "": unopened, a malformed id
            replay, recovered = await channel.replay_after(last_id)
            stats.resumed(len(replay), recovered)  # as a Subscription's resume is counted
            if not recovered:
                yield _reset(None, resume)
            queue.skip = {message_id for message_id, _ in replay} or None
            for message_id, message in replay:
                try:
                    if transform is not None:
                        message = transform(message)
                    frame = None if message is None else encoder(message, message_id)
                except Exception:
                    queue.fail()
                    break
                if frame is not None:
                    record.sent += 1
                    yield frame
        while True:
            drain.idle = True
            if not queue.items and drain.ended is None:
                try:
                    await drain.wait(interval)
                except TimeoutError:
                    drain.idle = False
                    yield PING
                    continue
            drain.idle = False
            if drain.ended is not None:
                yield drain.ended
                return
            missed = queue.missed()
            if missed and not plain:
                yield _reset(missed, None)
            entry = queue.take()
            if entry is None:
                continue
            try:
                frame = encoder(entry[1], entry[0])
            except Exception:
                queue.fail()
                continue
            record.sent += 1
            yield frame
    finally:
        queue.close()
        record.close()
        open_connections.closed()
        forget_shutdown()
        if admitted is not None:
            admitted.release()
