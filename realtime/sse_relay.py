"""The direct delivery path for SSE: an ``SSEView`` with ``relay = channel``.

It streams what ``follow(channel)`` streams (ids, resume after ``Last-Event-ID`` with ``event:
reset`` when history cannot reach back, ``event: reset`` with ``missed`` after drops), without the
generic path's two tasks and two queues per stream. When a message is published, the sink writes
its SSE frame, built once per publish and cached on the shared message, straight to the response
(``realtime.servers.response_writer``: on daphne, and on uvicorn's ``httptools`` protocol), in the
publisher's turn.

When it cannot (another server, a transport pushing back, a frame still on its way through
Django), frames wait in a bounded drop-oldest queue that the response body itself drains through
Django's ``send``, which waits for the client and is bounded by the slow-consumer policy
(``realtime.flow``). Order is kept: nothing is written directly while a frame is queued or being
sent. Token expiry, revocation, shutdown and pings behave as on every SSE stream.

A ``relay_message`` that raises, or returns what JSON cannot encode, ends that stream as a failing
``stream()`` does: the error is logged and the client gets ``event: error`` (``internal_error``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from . import lifecycle
from .encoding import SharedMessage
from .memory import open_connections
from .ops.connections import track_sse
from .revocation import revocations
from .sse import FAILED, OPENED, SHUTDOWN
from .sse_encoder import PING, encode_event, encode_item
from .threads import release_request_thread

logger = logging.getLogger("realtime.relay")


class SSERelaySink:
    """One stream's subscription to its view's ``relay`` channel."""

    __slots__ = ("__weakref__", "dropped", "ended", "event", "items", "maxlen", "record", "replayed", "sending",
                 "transform", "waiter", "writer")

    def __init__(self, view: Any, writer: Any, maxlen: int) -> None:
        self.writer = writer
        self.event: str | None = view.relay_event
        self.transform = None if type(view).relay_message is _identity() else view.relay_message
        self.items: deque[bytes] = deque()
        self.maxlen = maxlen
        self.dropped = 0
        #: Ids already sent from history, so the live stream does not send them twice.
        self.replayed: set[str] = set()
        #: True while the body is replaying or Django is sending one of its frames.
        self.sending = True
        self.ended: bytes | None = None
        self.waiter: asyncio.Future[None] | None = None
        #: The stream's realtime.ops record (frames sent are counted there).
        self.record: Any = None

    def offer(self, message: Any, message_id: str | None) -> None:
        if self.ended is not None or (message_id is not None and message_id in self.replayed):
            return
        try:
            frame = self.render(message, message_id)
        except Exception:
            self.fail()
            return
        if frame is None:
            return
        if not self.items and not self.sending:
            writer = self.writer
            if writer is not None and writer.ready():
                writer.write(frame)
                self.record.sent += 1
                return
        if len(self.items) >= self.maxlen:
            self.items.popleft()
            self.dropped += 1
        self.items.append(frame)
        self.wake()

    def render(self, message: Any, message_id: str | None) -> bytes | None:
        """The frame of a published message after ``relay_message``, or None when it is skipped."""
        if self.transform is not None:
            message = self.transform(message)
            if message is None:
                return None
        return self.frame(message, message_id)

    def fail(self) -> None:
        """The view's hook failed on a message: log it and end the stream with ``internal_error``."""
        logger.exception("Unhandled error relaying an SSE stream: the client gets event: error (internal_error)")
        self.items.clear()
        self.end(FAILED)

    def frame(self, message: Any, message_id: str | None) -> bytes:
        if type(message) is SharedMessage and message_id == message.id:
            cached = message._sse_relay
            if cached is not None and cached[0] == self.event:
                return cached[1]
            frame = _encode(message, message_id, self.event)
            message._sse_relay = (self.event, frame)
            return frame
        return _encode(message, message_id, self.event)

    def end(self, frame: bytes) -> None:
        """End the stream with ``frame`` (thread-safe callers go through the loop)."""
        if self.ended is None:
            self.ended = frame
            self.wake()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _encode(message: Any, message_id: str | None, event: str | None) -> bytes:
    item: dict[str, Any] = {"data": message if isinstance(message, (str, dict, list)) else str(message)}
    if event is not None:
        item["event"] = event
    if message_id is not None:
        item["id"] = message_id
    return encode_item(item)


def _reset(missed: int | None, last_id: str | None) -> bytes:
    return encode_event({"missed": missed, "last_id": last_id}, event="reset").encode()


def _ended(code: str) -> bytes:
    return encode_event({"code": code, "detail": "Reconnect with a fresh token"}, event="error").encode()


async def relay_body(
    view: Any, channel: Any, writer_of: Any, ping_interval: float | None,
    user_pk: Any = None, expires: float | None = None, release: Any = None,
) -> AsyncIterator[bytes]:
    """The response body of a relay stream; ``writer_of()`` gives the direct writer once headers are out."""
    yield OPENED
    release_request_thread()
    loop = asyncio.get_running_loop()
    sink = SSERelaySink(view, writer_of(), channel.maxlen)
    record = sink.record = track_sse()
    resume = view.last_event_id if channel.history else None
    forget_shutdown = lifecycle.on_shutdown(lambda: sink.end(SHUTDOWN))
    unregister = (
        revocations.register(user_pk, lambda: loop.call_soon_threadsafe(sink.end, _ended("session_revoked")))
        if user_pk is not None else None
    )
    expiry = loop.call_later(max(0.0, expires - time.time()), sink.end, _ended("token_expired")) if expires else None
    interval = ping_interval if ping_interval and ping_interval > 0 else None
    open_connections.opened()
    channel.attach(sink)  # live first, so nothing published during the replay is missed
    try:
        if resume is not None:
            replay, recovered = await channel.replay_after(resume)
            if not recovered:
                yield _reset(None, resume)
            for message_id, message in replay:
                sink.replayed.add(message_id)
                try:
                    frame = sink.render(message, message_id)
                except Exception:
                    sink.fail()
                    break
                if frame is not None:
                    record.sent += 1
                    yield frame
        reported = 0
        while True:
            sink.sending = False
            if not sink.items and sink.ended is None:
                sink.waiter = loop.create_future()
                try:
                    async with asyncio.timeout(interval):
                        await sink.waiter
                except TimeoutError:
                    sink.sending = True
                    yield PING
                    continue
                finally:
                    sink.waiter = None
            sink.sending = True
            if sink.ended is not None:
                yield sink.ended
                return
            if sink.dropped > reported:
                yield _reset(sink.dropped - reported, None)
                reported = sink.dropped
            record.sent += 1
            yield sink.items.popleft()
    finally:
        channel.detach(sink)
        record.close()
        open_connections.closed()
        forget_shutdown()
        if unregister is not None:
            unregister()
        if expiry is not None:
            expiry.cancel()
        if release is not None:
            release()


def _identity() -> Any:
    from .sse import SSEView

    return SSEView.relay_message

