"""uvicorn as `realtime` uses it: ready-made frames to its transports, and inbound bytes counted.

uvicorn's ASGI ``send`` already waits for room (``resume_writing``) before every write and sends
every close code with its reason, so it needs no patch there. What this adapter adds:

- WebSockets on uvicorn's ``websockets-sansio`` protocol: a published message's frame, built once,
  is written straight to each socket's transport while the socket is open and its transport has
  room; the websockets library's frames for a server are the same unmasked bytes. The check reads
  uvicorn's own flags (``handshake_complete``, ``close_sent``, ``disconnected``, the ``writable``
  event) and the websockets connection's state. The legacy ``websockets`` and the ``wsproto``
  protocols get no writer: the relay takes the ASGI path there.
- SSE on uvicorn's ``httptools`` HTTP protocol (the one ``uvicorn[standard]`` runs): a streaming
  response there is sent chunked, one chunk per ASGI body message, so a frame written as one chunk
  is what uvicorn would have written. The check reads the request cycle's flags (headers sent, not
  complete, not disconnected, chunked) and its flow control (``write_paused``). The ``h11``
  protocol keeps the framing in h11's state machine, so it gets no writer.
- ``abort(send)``: ASGI has no message for dropping a connection; uvicorn's ``send`` is a method of
  its protocol object, whose asyncio transport can ``abort()``.
- Inbound bytes on ``websockets-sansio`` (:func:`_patch_inbound`, :class:`MeteredReading`): each
  message queued for the application, and the websockets parser's buffer after each read, are charged
  to the connection's :class:`realtime.inbound.InboundMeter`, which stops reading the transport
  (``pause_reading``) past its bounds. uvicorn itself stops reading after each message and reads
  again once its queue is empty; the meter's pause comes on top (a read that uvicorn resumes is paused
  again at once). The parser's message limit is lowered to ``MAX_MESSAGE_SIZE`` (uvicorn's
  ``--ws-max-size`` is 16 MiB by default, all of it buffered before the view could refuse it with
  1009): websockets then closes with 1009 itself.

Versions: outside ``tested_versions`` (uvicorn, websockets, httptools) the writers are refused
with one warning (:meth:`ServerAdapter.trusted`). ``abort`` stays: it uses only asyncio's
transport API.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..conf import setting
from .base import ABORT_GRACE_SECONDS, Features, ServerAdapter

logger = logging.getLogger("realtime.servers")

WEBSOCKET_MODULE = "uvicorn.protocols.websockets.websockets_sansio_impl"
HTTP_MODULE = "uvicorn.protocols.http.httptools_impl"
#: What the writers read, on the protocol behind a WebSocket's send and on its ``conn``.
WEBSOCKET_ATTRIBUTES = ("writable", "handshake_complete", "close_sent", "disconnected", "conn", "transport")
#: What the inbound patches read on that protocol (and ``conn.reader.buffer``, ``conn.max_message_size``).
INBOUND_ATTRIBUTES = ("queue", "frames", "read_paused")
#: The methods of uvicorn's websockets-sansio protocol the inbound patches wrap.
INBOUND_METHODS = ("data_received", "send_receive_event_to_app")
#: What the writers read on the request cycle behind an HTTP send (``flow.write_paused`` too).
CYCLE_ATTRIBUTES = ("response_started", "response_complete", "disconnected", "chunked_encoding", "flow", "transport")


class TransportWriter:
    """Writes frames to one uvicorn WebSocket's transport while it is open and has room."""

    __slots__ = ("protocol", "transport")

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.transport = protocol.transport

    def ready(self) -> bool:
        protocol = self.protocol
        return (
            protocol.writable.is_set()
            and protocol.handshake_complete
            and not protocol.close_sent
            and not protocol.disconnected
            and not self.transport.is_closing()
            and protocol.conn.state is _OPEN
        )

    def write(self, data: bytes) -> None:
        self.transport.write(data)


_OPEN: Any = None


class ChunkWriter:
    """Writes SSE frames, each as one HTTP chunk, to a uvicorn ``httptools`` streaming response."""

    __slots__ = ("cycle", "transport")

    def __init__(self, cycle: Any) -> None:
        self.cycle = cycle
        self.transport = cycle.transport

    def ready(self) -> bool:
        cycle = self.cycle
        return (
            cycle.response_started
            and not cycle.response_complete
            and not cycle.disconnected
            and cycle.chunked_encoding is True
            and not cycle.flow.write_paused
            and not self.transport.is_closing()
        )

    def write(self, data: bytes) -> None:
        global _last_chunk
        # A publish writes the same frame object to every stream in turn: chunk it once.
        last = _last_chunk
        if last[0] is not data:
            last = _last_chunk = (data, b"%x\r\n%b\r\n" % (len(data), data))
        self.transport.write(last[1])


#: The last frame chunked, and its chunk (one entry: the frame of the publish being fanned out).
_last_chunk: tuple[bytes | None, bytes] = (None, b"")


def _owner(send: Any, module: str) -> Any:
    """The protocol object whose bound method ``send`` is, when its class lives in ``module``."""
    owner = getattr(send, "__self__", None)
    if owner is None or type(owner).__module__ != module:
        return None
    return owner


# -- inbound: what uvicorn holds of a client's messages (realtime.inbound), and reading paused -----


class MeteredReading:
    """Stops and restarts reading one uvicorn WebSocket for its InboundMeter (``realtime.inbound.ReadControl``)."""

    __slots__ = ("protocol",)

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol

    def pause(self) -> None:
        self.protocol.transport.pause_reading()

    def resume(self) -> None:
        protocol = self.protocol
        if not protocol.read_paused and not protocol.transport.is_closing():  # uvicorn's own pause stays
            protocol.transport.resume_reading()


def parse_buffers(protocol: Any) -> int:
    """Bytes the websockets parser holds for a connection (read, not a whole frame yet), and the
    fragments of a message still arriving."""
    size = len(protocol.conn.reader.buffer)
    if protocol.frames:
        size += sum(map(len, protocol.frames))
    return size


def _patch_inbound(protocol_class: type) -> None:
    """Charge the connection's InboundMeter with each message uvicorn queues, and with the parser's
    buffer after each read. Connections without a meter run uvicorn's code untouched."""
    original_event = protocol_class.send_receive_event_to_app
    original_data = protocol_class.data_received
    protocol_class._realtime_meter = None

    def send_receive_event_to_app(self: Any) -> None:
        meter = self._realtime_meter
        if meter is None:
            original_event(self)
            return
        size, before = sum(map(len, self.frames)), self.queue.qsize()
        original_event(self)
        if self.queue.qsize() > before:
            meter.charge(size)

    def data_received(self: Any, data: bytes) -> None:
        original_data(self, data)
        meter = self._realtime_meter
        if meter is not None:
            meter.parsed(parse_buffers(self))

    protocol_class.send_receive_event_to_app = send_receive_event_to_app
    protocol_class.data_received = data_received
    protocol_class._realtime_inbound = True


class UvicornAdapter(ServerAdapter):
    name = "uvicorn"
    modules = ("uvicorn.server",)
    features = Features(
        websocket_writes=True, response_writes=True, close_code_on_disconnect=False, any_close_code=True,
        backpressure=True, abort=True, graceful_shutdown=False, inbound_pushback=True,
    )
    tested_versions = {"uvicorn": ("0.54.0",), "websockets": ("17.4",), "httptools": ("0.9.0",)}

    def install(self) -> bool:
        if not self.running():
            return False
        from importlib import import_module

        try:
            protocol_class = import_module(WEBSOCKET_MODULE).WebSocketsSansIOProtocol
        except ImportError:  # no websockets installed: uvicorn serves WebSockets with wsproto, or not at all
            return True
        if getattr(protocol_class, "_realtime_inbound", False):
            return True
        missing = self.missing_methods()
        if missing:
            logger.warning(
                "realtime: %s lacks %s; inbound bytes are not counted on uvicorn (MAX_INBOUND_BYTES only bounds "
                "what the view holds)", self.versions(), ", ".join(missing),
            )
            return True
        _patch_inbound(protocol_class)
        return True

    def missing_methods(self) -> list[str]:
        """The methods of :data:`INBOUND_METHODS` the installed uvicorn lacks."""
        from importlib import import_module

        try:
            protocol_class = import_module(WEBSOCKET_MODULE).WebSocketsSansIOProtocol
        except (ImportError, AttributeError):
            return [f"{WEBSOCKET_MODULE}.WebSocketsSansIOProtocol"]
        return [f"WebSocketsSansIOProtocol.{name}" for name in INBOUND_METHODS if not hasattr(protocol_class, name)]

    def meter_inbound(self, send: Any, meter: Any) -> bool:
        protocol = _owner(send, WEBSOCKET_MODULE)
        if protocol is None or not getattr(type(protocol), "_realtime_inbound", False):
            return False  # not a websockets-sansio WebSocket, or uvicorn left unpatched
        if self.missing_inbound(protocol):
            return False
        limit = int(setting("MAX_MESSAGE_SIZE"))
        conn = protocol.conn
        if conn.max_message_size is None or conn.max_message_size > limit:
            conn.max_message_size = limit
        protocol._realtime_meter = meter
        meter.attach(MeteredReading(protocol))
        return True

    def websocket_writer(self, send: Any) -> TransportWriter | None:
        global _OPEN
        protocol = _owner(send, WEBSOCKET_MODULE)
        if protocol is None or self.missing_writer(protocol):
            return None
        if _OPEN is None:
            from websockets.protocol import State

            _OPEN = State.OPEN
        return TransportWriter(protocol)

    def response_writer(self, send: Any) -> ChunkWriter | None:
        cycle = _owner(send, HTTP_MODULE)
        if cycle is None or self.missing(send):
            return None
        return ChunkWriter(cycle)

    def missing(self, send: Any) -> list[str]:
        """What the writers read on the live connection behind ``send`` and it lacks."""
        protocol = _owner(send, WEBSOCKET_MODULE)
        if protocol is not None:
            return self.missing_writer(protocol) + self.missing_inbound(protocol)
        cycle = _owner(send, HTTP_MODULE)
        if cycle is not None:
            missing = [f"RequestResponseCycle.{name}" for name in CYCLE_ATTRIBUTES if not hasattr(cycle, name)]
            if not missing and not hasattr(cycle.flow, "write_paused"):
                missing.append("FlowControl.write_paused")
            return missing
        return [f"uvicorn's send: a method of {WEBSOCKET_MODULE} or {HTTP_MODULE}"]

    def missing_writer(self, protocol: Any) -> list[str]:
        """What the WebSocket writer reads on a live websockets-sansio protocol and it lacks."""
        missing = [f"{type(protocol).__name__}.{name}" for name in WEBSOCKET_ATTRIBUTES if not hasattr(protocol, name)]
        if not missing and not hasattr(protocol.conn, "state"):
            missing.append("websockets ServerProtocol.state")
        return missing

    def missing_inbound(self, protocol: Any) -> list[str]:
        """What the inbound patches read on a live websockets-sansio protocol and it lacks."""
        missing = [f"{type(protocol).__name__}.{name}" for name in INBOUND_ATTRIBUTES if not hasattr(protocol, name)]
        conn = getattr(protocol, "conn", None)
        if not hasattr(conn, "max_message_size"):
            missing.append("websockets ServerProtocol.max_message_size")
        if not hasattr(getattr(conn, "reader", None), "buffer"):
            missing.append("websockets ServerProtocol.reader.buffer")
        return missing

    def abort(self, send: Any) -> bool:
        owner = getattr(send, "__self__", None)
        abort = getattr(getattr(owner, "transport", None), "abort", None)
        if abort is None or not type(owner).__module__.startswith("uvicorn."):
            return False
        asyncio.get_running_loop().call_later(ABORT_GRACE_SECONDS, abort)
        return True


adapter = UvicornAdapter()
