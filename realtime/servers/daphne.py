"""daphne (on Twisted and autobahn) as `realtime` uses it: patched for correctness, written to directly.

Patches, applied once by :meth:`DaphneAdapter.install` when daphne is the running server:

- **Close codes.** daphne closes sockets through autobahn's ``sendClose``, which refuses every code
  but 1000 and 3000-4999 (so 1003, 1007, 1008, 1009, 1011 raise inside the server and the client
  never gets a close frame), and passes no reason. RFC 6455 lets a server send all of them; daphne
  itself uses autobahn's lower-level ``sendCloseFrame`` for 1011. The ASGI ``websocket.close`` goes
  through that same call, with the reason. A client's close frame with a code no client may send
  gets 1002 (autobahn would abort the TCP connection instead).
- **Backpressure.** daphne's ASGI ``send`` never waits: it hands bytes to Twisted, whose write buffer
  grows without bound for a client that does not read. Every WebSocket (at accept) and every
  streaming HTTP response (at its first chunk) gets a :class:`WriteGate`, a Twisted push producer
  paused by its transport over ``bufferSize``, and daphne's ``send`` waits while it is paused, as
  uvicorn's does. What to do with a client that stays paused is :mod:`realtime.flow`'s policy.
- **Per-connection limits.** autobahn's message and frame limits are ``MAX_MESSAGE_SIZE`` and
  ``failByDrop`` is off, so 1009, 1007 and 1002 get a close frame, not a TCP reset.
- **Inbound bytes.** daphne queues each message for the application as it arrives, without bound:
  each one queued, and autobahn's parse buffers after each read, are charged to the connection's
  :class:`realtime.inbound.InboundMeter`, which stops reading the socket (``pauseProducing``) past
  ``MAX_INBOUND_BYTES`` (:func:`_patch_inbound`, :class:`MeteredReading`); past
  ``MAX_PENDING_MESSAGES`` queued messages the socket is no longer read until half are.
- **A handshake answered with an HTTP response.** daphne answers a ``websocket.close`` before accept
  with 403 and knows nothing of ASGI's ``websocket.http.response``: its WebSocket scopes now carry
  the extension, and the response (status, headers, body) is written as autobahn writes a failed
  handshake's, so that a refusal can say 404 or 503 with ``Retry-After``.
- **Empty payloads.** ``send_text("")`` and ``send_bytes(b"")`` are sent (daphne drops them).
- **Departures.** A send that races the client's close raises ``ClientDisconnected`` with the
  client's close code, instead of autobahn's ``Disconnected``; a message with ``ABORT_KEY`` drops
  the HTTP connection ``ABORT_GRACE_SECONDS`` later.
- **Shutdown.** On SIGTERM :func:`realtime.lifecycle.begin_shutdown` runs first (from then on the
  admission answers new connections 503, every view's WebSocket closes itself with 1001, every SSE
  stream sends its last frame), every other open WebSocket is closed with 1001, then the
  applications are cancelled (daphne's own shutdown raises ``KeyError`` on a connection that has no
  application yet and drops every socket without a close frame) and at most ``DRAIN_SECONDS`` are
  waited. The listener stays open meanwhile, so a client that comes back at once is told 503 and
  ``Retry-After`` rather than left unanswered.
- **Access log.** daphne prints whole URIs; ``token=`` values are redacted (:mod:`realtime.redaction`).
- **Status lines.** Twisted lacks reason phrases past 418 (``429 Unknown Status``): the standard library's
  are added.

Direct writes: :class:`DirectWriter` and :class:`ResponseWriter` hand the delivery path
ready-made frames for the transport. A WebSocket frame goes to the socket with one ``send`` when
Twisted holds nothing for it (:func:`send_now`): Twisted's own ``write`` buffers every write
until the reactor's next turn, which costs registering the socket for writing and unregistering
it (two ``epoll_ctl``) and a reactor callback per connection per turn, more than the ``send``.

Versions. Outside ``tested_versions`` the direct writers are refused (one warning at start-up,
:meth:`ServerAdapter.trusted`): they read daphne's and Twisted's private state and skip daphne's
send. The patches stay on while every name they wrap or read exists (:data:`CLASS_ATTRIBUTES`): a
daphne without them is worse (close codes raise, buffers grow without bound, tokens reach the
log). If any is missing none is applied (a half-patched daphne is worse still) and a warning names
the versions and what is missing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from importlib import import_module
from typing import Any

from ..closecodes import is_receivable
from ..conf import setting
from ..redaction import redact
from .base import (
    ABORT_GRACE_SECONDS,
    ABORT_KEY,
    DRAIN_SECONDS,
    LINGER_SECONDS,
    ClientDisconnected,
    Features,
    ServerAdapter,
    SlowConsumer,
)

logger = logging.getLogger("realtime.servers")
shutdown_logger = logging.getLogger("realtime.shutdown")

#: Seconds between checks of a paused reader's queue.
POLL_SECONDS = 0.05

#: What the patches wrap or read, by module (and class): the names tests/test_servers_contract.py
#: checks on the installed packages.
CLASS_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "daphne.ws_protocol.WebSocketProtocol": (
        "handle_reply", "onConnect", "onMessage", "onCloseFrame", "sendCloseFrame", "sendMessage",
        "dropConnection", "dataReceived", "sendHttpErrorResponse", "sendData", "STATE_CONNECTING", "STATE_OPEN",
        "STATE_CLOSED", "CONFIG_ATTRS",
    ),
    # parse_buffers reads the lists these fill (message_data, frame_data) on live sockets.
    "autobahn.websocket.protocol.WebSocketProtocol": ("onMessageBegin", "onMessageFrameBegin", "onMessageFrameData"),
    "daphne.server.Server": ("handle_reply", "kill_all_applications", "create_application", "log_action"),
    "daphne.http_protocol.WebRequest": ("handle_reply", "registerProducer", "unregisterProducer"),
    "daphne.access.AccessLogGenerator": ("__call__",),
    "twisted.internet.abstract.FileDescriptor": (
        "registerProducer", "unregisterProducer", "pauseProducing", "resumeProducing", "bufferSize", "dataBuffer",
    ),
    "twisted.web.http.Request": ("write",),
    "twisted.web.http": ("RESPONSES",),
    "autobahn.util": ("encode_truncate",),
    "autobahn.exception": ("Disconnected",),
}
#: autobahn's per-protocol options set before each handshake (``WebSocketProtocol.CONFIG_ATTRS``).
OPTIONS = ("maxMessagePayloadSize", "maxFramePayloadSize", "failByDrop")
#: What is read on live objects: checked on a real daphne by :meth:`DaphneAdapter.missing`.
WEBSOCKET_ATTRIBUTES = (
    "state", "transport", "application_queue", "remoteCloseCode", "_realtime_gate", "data", "server", "request",
    "client_addr",
)
REQUEST_ATTRIBUTES = ("finished", "channel", "_realtime_gate")
TRANSPORT_ATTRIBUTES = (
    "write", "dataBuffer", "_tempDataLen", "bufferSize", "abortConnection", "socket", "connected",
    "TLS",
)
SERVER_ATTRIBUTES = ("connections",)


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
        """Bytes waiting in the transport's user-space buffer (Twisted's ``dataBuffer`` and ``_tempDataLen``).

        On a TLS transport (daphne's ``ssl:`` endpoint) the transport is Twisted's
        ``TLSMemoryBIOProtocol``, which has neither: owed() is 0 there, so ``SEND_BUFFER_LIMIT``
        never ends a client at once. The pause still works (the TLS layer passes the producer on
        to the TCP transport), so sends wait and ``SLOW_CONSUMER_TIMEOUT`` ends a client that stops
        reading.
        """
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
        send_now(self.gate.transport, data)


def send_now(transport: Any, data: bytes) -> None:
    """Write ``data`` to a Twisted TCP transport: straight to the socket when nothing is buffered
    before it (order kept), the rest (or all of it, on TLS or an error) through ``transport.write``,
    which buffers it, applies the producer's pause and finds a lost connection itself."""
    sock = getattr(transport, "socket", None)  # none on a TLS endpoint's transport
    if sock is None or transport.TLS or transport.dataBuffer or transport._tempDataLen or not transport.connected:
        transport.write(data)
        return
    try:
        sent = sock.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        transport.write(data)  # a lost connection: Twisted's next write attempt finds and reports it
        return
    if sent < len(data):
        transport.write(data[sent:])


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


def _connection(send: Any) -> Any:
    """The protocol or request behind daphne's ASGI ``send`` (``partial(server.handle_reply, it)``), or None."""
    if isinstance(send, functools.partial) and len(send.args) == 1:
        return send.args[0]
    return None


class DaphneAdapter(ServerAdapter):
    name = "daphne"
    modules = ("daphne.ws_protocol",)
    features = Features(
        websocket_writes=True, response_writes=True, close_code_on_disconnect=True, any_close_code=True,
        backpressure=True, abort=True, graceful_shutdown=True, handshake_response=True, inbound_pushback=True,
    )
    tested_versions = {"daphne": ("4.2.3",), "twisted": ("26.10.0",), "autobahn": ("26.11.1",)}

    def websocket_writer(self, send: Any) -> DirectWriter | None:
        protocol = _connection(send)
        gate = getattr(protocol, "_realtime_gate", None)
        if not isinstance(gate, WriteGate) or not hasattr(protocol, "sendMessage"):
            return None  # not an accepted daphne WebSocket with our gate (an HTTP request, another server)
        return DirectWriter(protocol, gate)

    def response_writer(self, send: Any) -> ResponseWriter | None:
        request = _connection(send)
        gate = getattr(request, "_realtime_gate", None)
        if not isinstance(gate, WriteGate) or not hasattr(request, "finished"):
            return None
        return ResponseWriter(request, gate)

    def meter_inbound(self, send: Any, meter: Any) -> bool:
        protocol = _connection(send)
        if not getattr(type(protocol), "_realtime_inbound", False):
            return False  # not a daphne WebSocket, or daphne left unpatched
        protocol._realtime_meter = meter
        meter.attach(MeteredReading(protocol))
        return True

    def missing_attributes(self) -> list[str]:
        """The names of :data:`CLASS_ATTRIBUTES` and :data:`OPTIONS` the installed packages lack."""
        missing = []
        for path, names in CLASS_ATTRIBUTES.items():
            try:
                owner = import_module(path)
            except ImportError:
                module, _, attribute = path.rpartition(".")
                try:
                    owner = getattr(import_module(module), attribute)
                except (ImportError, AttributeError):
                    missing.append(path)
                    continue
            missing += [f"{path}.{name}" for name in names if not hasattr(owner, name)]
        if not missing:
            config = import_module("daphne.ws_protocol").WebSocketProtocol.CONFIG_ATTRS
            missing += [f"autobahn option {name}" for name in OPTIONS if name not in config]
        return missing

    def missing(self, send: Any) -> list[str]:
        """What the patches and writers read on the live connection behind ``send`` and it lacks.

        Call it after ``websocket.accept``, or after a streaming response's first body chunk.
        """
        target = _connection(send)
        if target is None:
            return ["daphne's send: functools.partial(Server.handle_reply, connection)"]
        server = getattr(send.func, "__self__", None)
        missing = [f"Server.{name}" for name in SERVER_ATTRIBUTES if not hasattr(server, name)]
        if hasattr(target, "sendMessage"):
            kind, names, transport = "WebSocketProtocol", WEBSOCKET_ATTRIBUTES, getattr(target, "transport", None)
        else:
            kind, names = "WebRequest", REQUEST_ATTRIBUTES
            transport = getattr(getattr(target, "channel", None), "transport", None)
        missing += [f"{kind}.{name}" for name in names if not hasattr(target, name)]
        missing += [f"{kind} transport.{name}" for name in TRANSPORT_ATTRIBUTES if not hasattr(transport, name)]
        return missing

    def install(self) -> bool:
        if not self.running():
            return False
        from daphne.access import AccessLogGenerator
        from daphne.http_protocol import WebRequest
        from daphne.server import Server
        from daphne.ws_protocol import WebSocketProtocol

        if getattr(WebSocketProtocol, "_realtime_installed", False):
            return True
        missing = self.missing_attributes()
        if missing:
            logger.warning(
                "realtime: %s lacks %s; daphne is left unpatched (close codes beyond 1000 and 3000-4999, "
                "backpressure, the 1001 shutdown and access-log redaction are off)",
                self.versions(), ", ".join(missing),
            )
            return True
        _patch_websocket(WebSocketProtocol)
        _patch_inbound(WebSocketProtocol)
        _patch_send(Server)
        _patch_scope(Server, WebSocketProtocol)
        _patch_http(WebRequest)
        _patch_shutdown(Server, WebSocketProtocol)
        _patch_access_log(AccessLogGenerator)
        _add_reason_phrases()
        WebSocketProtocol._realtime_installed = True
        return True


def _gate(connection: Any, transport: Any) -> WriteGate:
    gate = WriteGate(transport)
    transport.bufferSize = int(setting("SEND_BUFFER_SIZE"))
    connection._realtime_gate = gate
    return gate


def _patch_websocket(protocol_class: type) -> None:
    from autobahn.util import encode_truncate

    original_connect = protocol_class.onConnect
    original_reply = protocol_class.handle_reply
    original_close_frame = protocol_class.onCloseFrame

    def onConnect(self: Any, request: Any) -> Any:
        limit = int(setting("MAX_MESSAGE_SIZE"))
        # Per-connection options: autobahn copied the factory's into the protocol on connect.
        self.maxMessagePayloadSize = limit
        self.maxFramePayloadSize = limit
        self.failByDrop = False
        return original_connect(self, request)

    def handle_reply(self: Any, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind in ("websocket.http.response.start", "websocket.http.response.body"):
            _deny_handshake(self, message)
            return
        if self.state != self.STATE_CONNECTING:
            if kind == "websocket.close":
                code = message.get("code") or 1000
                reason = message.get("reason") or None
                self.sendCloseFrame(
                    code=int(code), reasonUtf8=encode_truncate(reason, 123) if reason else None, isReply=False
                )
                return
            if kind == "websocket.send":
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
    protocol_class.handle_reply = handle_reply


def _deny_handshake(protocol: Any, message: dict[str, Any]) -> None:
    """ASGI ``websocket.http.response``: the start is kept, the last body writes the whole response
    (as autobahn's ``failHandshake``, with headers and a body) and drops the connection."""
    if protocol.state != protocol.STATE_CONNECTING:
        return  # the client left meanwhile (or the handshake was answered): nothing to answer
    if message["type"] == "websocket.http.response.start":
        if hasattr(protocol, "_realtime_denial"):
            raise ValueError("websocket.http.response.start sent twice")
        protocol._realtime_denial = (int(message["status"]), list(message.get("headers") or ()), [])
        return
    denial = getattr(protocol, "_realtime_denial", None)
    if denial is None:
        raise ValueError("websocket.http.response.body without websocket.http.response.start")
    status, headers, parts = denial
    parts.append(bytes(message.get("body") or b""))
    if message.get("more_body"):
        return
    from http import HTTPStatus

    body = b"".join(parts)
    fields = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]
    fields += [("Content-Length", str(len(body))), ("Connection", "close")]
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown Status"
    handshake = getattr(protocol, "handshake_deferred", None)
    if handshake is not None:
        del protocol.handshake_deferred  # never fired: the response below is the handshake's answer
    protocol.wasNotCleanReason = f"handshake refused with HTTP {status}"
    protocol.sendHttpErrorResponse(status, phrase, fields)
    protocol.sendData(body)
    protocol.dropConnection(abort=False)
    client = protocol.client_addr
    address = f"{client[0]}:{client[1]}" if client else None
    # daphne's access log line for a refused handshake, as for its own 403s
    protocol.server.log_action("websocket", "rejected", {"path": protocol.request.path, "client": address})


def _patch_scope(server_class: type, websocket_protocol: type) -> None:
    """WebSocket scopes say that the handshake may be answered with an HTTP response."""
    original = server_class.create_application

    def create_application(self: Any, protocol: Any, scope: dict[str, Any]) -> Any:
        if isinstance(protocol, websocket_protocol):
            scope.setdefault("extensions", {})["websocket.http.response"] = {}
        return original(self, protocol, scope)

    server_class.create_application = create_application


# -- inbound: what daphne holds of a client's messages (realtime.inbound), and reading paused ------

#: Why a daphne WebSocket is not read (bits of ``_realtime_read_holds``): too many messages queued
#: for the application (``MAX_PENDING_MESSAGES``), or its InboundMeter (bytes). Read again when none is left.
PENDING, METERED = 1, 2


def _stop_reading(protocol: Any, reason: int) -> None:
    holds = protocol._realtime_read_holds
    protocol._realtime_read_holds = holds | reason
    if not holds and protocol.state != protocol.STATE_CLOSED:
        protocol.transport.pauseProducing()


def _start_reading(protocol: Any, reason: int) -> None:
    holds = protocol._realtime_read_holds
    if not holds & reason:
        return
    protocol._realtime_read_holds = holds & ~reason
    if holds == reason and protocol.state != protocol.STATE_CLOSED:
        protocol.transport.resumeProducing()


class MeteredReading:
    """Stops and restarts reading one daphne WebSocket for its InboundMeter (``realtime.inbound.ReadControl``)."""

    __slots__ = ("protocol",)

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol

    def pause(self) -> None:
        _stop_reading(self.protocol, METERED)

    def resume(self) -> None:
        _start_reading(self.protocol, METERED)


def parse_buffers(protocol: Any) -> int:
    """Bytes autobahn holds for a WebSocket before daphne queues them: read and not parsed, and the
    message still arriving (its frames so far, and the frame being read)."""
    size = len(protocol.data)
    for chunks in (getattr(protocol, "message_data", None), getattr(protocol, "frame_data", None)):
        if chunks:
            size += sum(map(len, chunks))
    return size


def _patch_inbound(protocol_class: type) -> None:
    """daphne queues every message for the application as it arrives, in a queue without bound. Charge
    the connection's InboundMeter with each message queued and, after each read, with autobahn's
    parse buffers; and stop reading past ``MAX_PENDING_MESSAGES`` queued until half are read."""
    original_message = protocol_class.onMessage
    original_data = protocol_class.dataReceived
    protocol_class._realtime_meter = None
    protocol_class._realtime_read_holds = 0

    def onMessage(self: Any, payload: bytes, isBinary: bool) -> None:
        queue = getattr(self, "application_queue", None)
        before = queue.qsize() if queue is not None else 0
        original_message(self, payload, isBinary)
        if queue is None:
            return
        queued = queue.qsize()
        meter = self._realtime_meter
        if meter is not None and queued > before:
            meter.charge(len(payload))
        limit = setting("MAX_PENDING_MESSAGES")
        if limit and queued >= limit and not self._realtime_read_holds & PENDING:
            _stop_reading(self, PENDING)
            _resume_when_read(self, queue, max(1, limit // 2))

    def dataReceived(self: Any, data: bytes) -> None:
        original_data(self, data)
        meter = self._realtime_meter
        if meter is not None:
            meter.parsed(parse_buffers(self))

    protocol_class.onMessage = onMessage
    protocol_class.dataReceived = dataReceived
    protocol_class._realtime_inbound = True


def _resume_when_read(protocol: Any, queue: asyncio.Queue[Any], low: int) -> None:
    from twisted.internet import reactor

    def check() -> None:
        if protocol.state == protocol.STATE_CLOSED:
            return
        if queue.qsize() <= low:
            _start_reading(protocol, PENDING)
        else:
            reactor.callLater(POLL_SECONDS, check)

    reactor.callLater(POLL_SECONDS, check)


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


def _patch_shutdown(server_class: type, websocket_protocol: type) -> None:
    from twisted.internet import defer

    from .. import lifecycle

    def kill_all_applications(self: Any) -> Any:
        # The views close their own sockets first: a view that knows it closed sends nothing after,
        # where a send racing a close made here would take the departure for the client's (1006).
        started = lifecycle.begin_shutdown()
        instances = [
            details["application_instance"]
            for details in self.connections.values()
            if "application_instance" in details and not details["application_instance"].done()
        ]

        async def drain() -> None:
            if started:
                await asyncio.wait(started, timeout=DRAIN_SECONDS)
            for protocol in list(self.connections):  # what no view closed (another consumer's socket)
                if isinstance(protocol, websocket_protocol) and protocol.state == protocol.STATE_OPEN:
                    protocol.sendCloseFrame(code=1001, reasonUtf8=b"Server shutting down", isReply=False)
            await asyncio.sleep(LINGER_SECONDS)  # last frames flush; newcomers are answered 503
            for instance in instances:
                instance.cancel()
            await asyncio.wait(instances, timeout=DRAIN_SECONDS) if instances else None

        shutdown_logger.info("Shutting down: closing %d connection(s)", len(instances))
        deferred = defer.Deferred.fromFuture(asyncio.ensure_future(drain()))
        deferred.addErrback(lambda failure: None)
        return deferred

    server_class.kill_all_applications = kill_all_applications


def _patch_access_log(generator_class: type) -> None:
    original = generator_class.__call__

    def log(self: Any, protocol: str, action: str, details: dict[str, Any]) -> None:
        if isinstance(details.get("path"), str):
            details = {**details, "path": redact(details["path"])}
        original(self, protocol, action, details)

    generator_class.__call__ = log


adapter = DaphneAdapter()


def _add_reason_phrases() -> None:
    """Twisted's status table stops at 418 (and skips 422, 428, 429, 431, 451...): daphne's status line
    then reads ``429 Unknown Status``. Add the standard library's phrase for every code it lacks."""
    from http import HTTPStatus

    from twisted.web import http

    for status in HTTPStatus:
        http.RESPONSES.setdefault(status.value, status.phrase.encode("ascii"))
