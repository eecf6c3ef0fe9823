"""daphne's side of backpressure and protocol limits, through Twisted's producer/consumer API.

daphne's ASGI ``send`` never waits: it hands bytes to Twisted, whose write buffer grows without
bound for a client that does not read. Twisted has the interface for exactly this: a *push
producer* registered on a transport is paused when the transport's buffer passes its high-water
mark (``bufferSize``) and resumed when it drains. Here every WebSocket (at accept) and every
streaming HTTP response (at its first chunk) gets a :class:`WriteGate` registered that way, and
daphne's ``send`` waits while the gate is paused, as uvicorn's does. What to do with a client that
stays paused is :mod:`realtime.flow`'s policy, the same on every server.

Also, per WebSocket connection (autobahn's per-protocol options, set before the handshake):

- autobahn's message and frame limits are ``REALTIME["MAX_MESSAGE_SIZE"]``, so daphne never
  buffers a larger message before the app sees it; and ``failByDrop`` is off, so a message too big
  (1009), invalid UTF-8 (1007) and protocol violations (1002) get a close frame, not a TCP reset;
- inbound: when ``REALTIME["MAX_PENDING_MESSAGES"]`` messages wait unread in daphne's queue for
  the app, the socket is no longer read (TCP pushes back on the client) until half are consumed;
- ``send_text("")`` and ``send_bytes(b"")`` are sent (daphne drops empty payloads);
- :func:`writer_for` hands the direct delivery path (``realtime.relay``) a writer of ready-made
  frames for an open socket whose transport has room;
- a send that races the client's close raises :class:`realtime.flow.ClientDisconnected` with the
  client's close code, instead of autobahn's ``Disconnected``.

It is installed only for daphne 4 on Twisted with ``FileDescriptor.registerProducer``; on anything
else daphne keeps its own behaviour and a warning says so.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from .conf import setting
from .flow import ABORT_GRACE_SECONDS, ABORT_KEY, ClientDisconnected, SlowConsumer

logger = logging.getLogger("realtime.flow")

#: Seconds between checks of a paused reader's queue.
POLL_SECONDS = 0.05


class WriteGate:
    """A Twisted ``IPushProducer`` for one connection: ``wait()`` returns once its transport drains."""

    __slots__ = ("_waiters", "paused", "stopped", "transport")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.paused = False
        self.stopped = False
        self._waiters: list[asyncio.Future[None]] = []

    # -- IPushProducer, called by the transport ------------------------------------------------

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._wake()

    def stopProducing(self) -> None:
        self.stopped = True
        self.paused = False
        self._wake()

    # -- for the ASGI send ---------------------------------------------------------------------

    def owed(self) -> int:
        """Bytes waiting in the transport's user-space buffer."""
        transport = self.transport
        return len(getattr(transport, "dataBuffer", b"")) + getattr(transport, "_tempDataLen", 0)

    async def wait(self) -> None:
        while self.paused and not self.stopped:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class DirectWriter:
    """Writes ready-made frame bytes to one daphne WebSocket's transport, skipping the ASGI hop.

    Only while the connection is open and its transport is not pushing back: otherwise the caller
    takes the ASGI path, which waits, and the slow-consumer policy applies.
    """

    __slots__ = ("gate", "protocol")

    def __init__(self, protocol: Any, gate: WriteGate) -> None:
        self.protocol = protocol
        self.gate = gate

    def ready(self) -> bool:
        gate = self.gate
        return not gate.paused and not gate.stopped and self.protocol.state == self.protocol.STATE_OPEN

    def write(self, data: bytes) -> None:
        self.gate.transport.write(data)


def writer_for(send: Any) -> DirectWriter | None:
    """A DirectWriter for the connection behind daphne's ASGI ``send``, or None for any other server."""
    if not isinstance(send, functools.partial) or len(send.args) != 1:
        return None
    protocol = send.args[0]
    gate = getattr(protocol, "_realtime_gate", None)
    if not isinstance(gate, WriteGate) or not hasattr(protocol, "sendMessage"):
        return None  # not an accepted daphne WebSocket with our gate (an HTTP request, another server)
    return DirectWriter(protocol, gate)


class ResponseWriter:
    """Writes ready-made SSE frames to one daphne streaming response (chunked by Twisted)."""

    __slots__ = ("gate", "request")

    def __init__(self, request: Any, gate: WriteGate) -> None:
        self.request = request
        self.gate = gate

    def ready(self) -> bool:
        gate, request = self.gate, self.request
        return not gate.paused and not gate.stopped and not request.finished and request.channel is not None

    def write(self, data: bytes) -> None:
        from twisted.web import http

        http.Request.write(self.request, data)


def http_writer_for(send: Any) -> ResponseWriter | None:
    """A ResponseWriter for the streaming response behind daphne's ASGI ``send``, or None."""
    if not isinstance(send, functools.partial) or len(send.args) != 1:
        return None
    request = send.args[0]
    gate = getattr(request, "_realtime_gate", None)
    if not isinstance(gate, WriteGate) or not hasattr(request, "finished"):
        return None
    return ResponseWriter(request, gate)


def supported() -> bool:
    """True for the daphne and Twisted this module was written against."""
    import daphne
    from twisted.internet.abstract import FileDescriptor

    return daphne.__version__.startswith("4.") and hasattr(FileDescriptor, "registerProducer")


def install(server_class: type, websocket_protocol: type, web_request: type) -> bool:
    """Patch daphne's classes once; False (and a warning) when this daphne is not one we know."""
    if getattr(server_class, "_realtime_flow", False):
        return True
    if not supported():
        logger.warning("realtime: unknown daphne/Twisted version; no backpressure on daphne")
        return False
    _patch_send(server_class)
    _patch_websocket(websocket_protocol)
    _patch_http(web_request)
    server_class._realtime_flow = True
    return True


def _gate(protocol: Any, transport: Any) -> WriteGate:
    gate = WriteGate(transport)
    transport.bufferSize = int(setting("SEND_BUFFER_SIZE"))
    protocol._realtime_gate = gate
    return gate


def _patch_send(server_class: type) -> None:
    from autobahn.exception import Disconnected

    original = server_class.handle_reply

    async def handle_reply(self: Any, protocol: Any, message: dict[str, Any]) -> None:
        try:
            await original(self, protocol, message)
        except Disconnected:
            raise ClientDisconnected(getattr(protocol, "remoteCloseCode", None) or 1006) from None
        gate = getattr(protocol, "_realtime_gate", None)
        if gate is None or not gate.paused or message.get(ABORT_KEY):
            return
        kind = message["type"]
        if kind == "websocket.send" or (kind == "http.response.body" and message.get("more_body")):
            if gate.owed() > setting("SEND_BUFFER_LIMIT"):
                raise SlowConsumer(f"slow consumer: owes {gate.owed()} bytes")
            await gate.wait()

    server_class.handle_reply = handle_reply


def _patch_websocket(protocol_class: type) -> None:
    original_connect = protocol_class.onConnect
    original_message = protocol_class.onMessage
    original_reply = protocol_class.handle_reply

    def onConnect(self: Any, request: Any) -> Any:
        limit = int(setting("MAX_MESSAGE_SIZE"))
        # Per-connection options: autobahn copied the factory's into the protocol on connect.
        self.maxMessagePayloadSize = limit
        self.maxFramePayloadSize = limit
        self.failByDrop = False
        return original_connect(self, request)

    def onMessage(self: Any, payload: bytes, isBinary: bool) -> None:
        original_message(self, payload, isBinary)
        queue = getattr(self, "application_queue", None)
        limit = setting("MAX_PENDING_MESSAGES")
        if queue is None or not limit or getattr(self, "_realtime_reading_paused", False):
            return
        if queue.qsize() >= limit:
            self._realtime_reading_paused = True
            self.transport.pauseProducing()
            _resume_when_read(self, queue, max(1, limit // 2))

    def handle_reply(self: Any, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "websocket.send" and self.state != self.STATE_CONNECTING:
            text, data = message.get("text"), message.get("bytes")
            if text == "" and data is None:
                self.sendMessage(b"", False)
                return
            if data == b"" and text is None:
                self.sendMessage(b"", True)
                return
        original_reply(self, message)
        if kind == "websocket.accept" and getattr(self, "_realtime_gate", None) is None:
            transport = self.transport
            transport.unregisterProducer()  # daphne's HTTP channel, left registered by the upgrade
            transport.registerProducer(_gate(self, transport), True)

    original_close_frame = protocol_class.onCloseFrame

    def onCloseFrame(self: Any, code: int | None, reasonRaw: bytes) -> Any:
        # autobahn answers a close frame with a bad code by closing with 1002, then takes the bad
        # frame for the client's reply and aborts the TCP connection: the 1002 never arrives.
        if self.state == self.STATE_OPEN and code is not None and not is_receivable(code):
            self.sendCloseFrame(code=1002, reasonUtf8=b"invalid close code", isReply=False)
            self.dropConnection(abort=False)
            return True
        return original_close_frame(self, code, reasonRaw)

    protocol_class.onConnect = onConnect
    protocol_class.onCloseFrame = onCloseFrame
    protocol_class.onMessage = onMessage
    protocol_class.handle_reply = handle_reply


def is_receivable(code: int) -> bool:
    """Close codes a client may send (RFC 6455 7.4: 1005, 1006 and 1015 never appear in a frame)."""
    from .daphne_compat import is_sendable

    return is_sendable(code)


def _resume_when_read(protocol: Any, queue: asyncio.Queue[Any], low: int) -> None:
    from twisted.internet import reactor

    def check() -> None:
        if protocol.state == protocol.STATE_CLOSED:
            return
        if queue.qsize() <= low:
            protocol._realtime_reading_paused = False
            protocol.transport.resumeProducing()
        else:
            reactor.callLater(POLL_SECONDS, check)

    reactor.callLater(POLL_SECONDS, check)


def _patch_http(request_class: type) -> None:
    original = request_class.handle_reply

    def handle_reply(self: Any, message: dict[str, Any]) -> None:
        if message.get("type") != "http.response.body" or self.finished or self.channel is None:
            original(self, message)
            return
        gate = getattr(self, "_realtime_gate", None)
        if message.get("more_body"):
            if gate is None:
                self.registerProducer(_gate(self, self.channel.transport), True)
            original(self, message)
            return
        transport = self.channel.transport
        if gate is not None:
            self.unregisterProducer()
        original(self, message)
        if message.get(ABORT_KEY) and transport is not None:
            from twisted.internet import reactor

            reactor.callLater(ABORT_GRACE_SECONDS, transport.abortConnection)

    request_class.handle_reply = handle_reply
