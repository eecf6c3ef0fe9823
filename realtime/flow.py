"""Backpressure and the slow-consumer policy, the same on every ASGI server.

A client that does not read must never make the server hold its messages without bound. The
server's ``send`` waits while the connection's write buffer is over its high-water mark (uvicorn
does this itself; on daphne :mod:`realtime.servers.daphne` makes it so). While a send waits, a
Channel subscriber's bounded queue fills and drops its oldest messages, counted and signalled as
a ``Gap``. :class:`SendGuard` bounds the wait: a send that waits longer than
``REALTIME["SLOW_CONSUMER_TIMEOUT"]`` seconds, or that the server refuses because the client
owes more than ``REALTIME["SEND_BUFFER_LIMIT"]`` bytes, ends the connection as a slow consumer:

- WebSocket: close code 4008 (``CloseCode.SLOW_CONSUMER``); the sender gets ``ClientDisconnected``.
- SSE (``text/event-stream`` responses): a last ``event: error`` with ``{"code": "slow_consumer"}``,
  then the response ends as if the client had left (the stream's generator is cancelled). On
  uvicorn, which waits for room *before* each write, that last frame is sent only if the client
  reads again within a second.

Either way the TCP connection is dropped ``ABORT_GRACE_SECONDS`` later, whatever it still buffers.

Other HTTP responses pass through untouched: a slow download is not a slow consumer.

``ClientDisconnected``, ``SlowConsumer``, ``ABORT_KEY`` and ``ABORT_GRACE_SECONDS`` are defined beside
the server adapters that raise and honour them (:mod:`realtime.servers.base`), and importable from
here as before.
"""

from __future__ import annotations

import asyncio
import types
from typing import Any

from . import servers
from .closecodes import CloseCode
from .conf import setting
from .pubsub.delivery import flush_writes
from .servers.base import ABORT_GRACE_SECONDS as ABORT_GRACE_SECONDS
from .servers.base import ABORT_KEY, SlowConsumer
from .servers.base import ClientDisconnected as ClientDisconnected
from .sse_encoder import encode_event

#: The last frame of an SSE stream whose client stopped reading.
SLOW_CONSUMER_FRAME = encode_event(
    {"code": "slow_consumer", "detail": "The client did not read fast enough; reconnect and resume"},
    event="error",
).encode()

class SendGuard:
    """Wraps one connection's ASGI ``send`` (and, for HTTP, ``receive``) with the policy above."""

    __slots__ = ("_gone", "_receive", "_send", "_streaming", "timeout", "websocket")

    def __init__(self, scope: dict[str, Any], send: Any, receive: Any = None) -> None:
        self._send = send
        self._receive = receive
        self.websocket = scope.get("type") == "websocket"
        self._streaming = self.websocket
        self._gone: asyncio.Future[None] | None = None
        timeout = setting("SLOW_CONSUMER_TIMEOUT")
        self.timeout: float | None = float(timeout) if timeout else None

    @property
    def slow(self) -> bool:
        """True once this connection was ended as a slow consumer."""
        return self._gone is not None and self._gone.done()

    async def send(self, message: dict[str, Any]) -> None:
        flush_writes()  # the direct frames of this turn go first: a send never overtakes them
        if self.slow:
            if self.websocket:
                raise SlowConsumer()
            return  # the response is over; Django is being told the client left
        kind = message["type"]
        if kind == "http.response.start":
            self._streaming = _is_event_stream(message)
        if not self._streaming or kind == "websocket.close":
            await self._send(message)
            return
        # Most sends complete without waiting: run the server's send up to its first suspension,
        # and arm the timeout (which costs more than the send itself) only if it does suspend.
        sending = self._send(message)
        try:
            try:
                pending = sending.send(None)
            except StopIteration:
                return
            async with asyncio.timeout(self.timeout):
                await _resume(sending, pending)
        except TimeoutError:
            await self._give_up(f"did not read for {self.timeout:g} s")
        except SlowConsumer as error:
            await self._give_up(str(error))

    async def receive(self) -> dict[str, Any]:
        """The server's next message, or ``http.disconnect`` once the client was given up on."""
        if self._gone is None:
            self._gone = asyncio.get_running_loop().create_future()
        if self._gone.done():
            return {"type": "http.disconnect"}
        pending = asyncio.ensure_future(self._receive())
        try:
            await asyncio.wait((pending, self._gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not pending.done():
                pending.cancel()
        if pending.done() and not pending.cancelled():
            return pending.result()
        return {"type": "http.disconnect"}

    async def _give_up(self, why: str) -> None:
        if self._gone is None:
            self._gone = asyncio.get_running_loop().create_future()
        if not self._gone.done():
            self._gone.set_result(None)
        if self.websocket:
            last = {"type": "websocket.close", "code": int(CloseCode.SLOW_CONSUMER), "reason": "slow_consumer",
                    ABORT_KEY: True}
        else:
            last = {"type": "http.response.body", "body": SLOW_CONSUMER_FRAME, "more_body": False, ABORT_KEY: True}
        try:
            async with asyncio.timeout(1.0):
                await self._send(last)
        except (TimeoutError, OSError):
            pass
        _abort_soon(self._send)
        if self.websocket:
            raise SlowConsumer(f"slow consumer: {why}")


@types.coroutine
def _resume(coroutine: Any, pending: Any) -> Any:
    """Await the rest of a coroutine already run up to ``pending``, as ``await`` would have."""
    while True:
        try:
            result = yield pending
        except BaseException as error:  # cancellation (the timeout) goes into the send, as with await
            try:
                pending = coroutine.throw(error)
            except StopIteration:
                return
        else:
            try:
                pending = coroutine.send(result)
            except StopIteration:
                return


def _abort_soon(send: Any) -> None:
    """Drop the TCP connection shortly, whatever it still buffers (daphne does it on ABORT_KEY)."""
    servers.abort(send)


def _is_event_stream(message: dict[str, Any]) -> bool:
    for name, value in message.get("headers") or ():
        if name.lower() == b"content-type":
            return value.lower().startswith(b"text/event-stream")
    return False
