"""uvicorn as `realtime` uses it: ready-made frames to its transports, and its shutdown.

uvicorn's ASGI ``send`` already waits for room (``resume_writing``) before every write and sends
every close code with its reason, so it needs no patch there. What this adapter adds:

- **Shutdown.** On a signal (SIGTERM, SIGINT), uvicorn's ``Server.shutdown`` closes its listeners,
  then sends 1012 to every WebSocket and waits, without end, for streaming responses that nothing
  tells to end. Wrapped (only after a signal: a program that embeds uvicorn goes on):
  :func:`realtime.lifecycle.begin_shutdown` runs first (the admission refuses new connections with
  503, every `realtime` WebSocket closes itself with 1001, every SSE stream sends its last frame),
  the closes are awaited (at most ``DRAIN_SECONDS``), the listener stays open ``LINGER_SECONDS``
  more (a client that comes straight back is answered 503 and ``Retry-After``), then uvicorn's own
  shutdown runs.
- **A handshake answered with an HTTP response.** uvicorn's websockets-sansio protocol sends the
  response of ``websocket.http.response`` but leaves ``handshake_complete`` False, so an application
  that returns then is logged as ``ASGI callable returned without completing handshake.``:
  :meth:`UvicornAdapter.handshake_denied` sets it, as uvicorn's own 403 path does.
- **Direct writes** to WebSockets on uvicorn's ``websockets-sansio`` protocol: a published message's frame, built once,
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

Versions: outside ``tested_versions`` (uvicorn, websockets, httptools) the writers are refused
with one warning (:meth:`ServerAdapter.trusted`). ``abort`` stays: it uses only asyncio's
transport API.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .base import ABORT_GRACE_SECONDS, DRAIN_SECONDS, LINGER_SECONDS, Features, ServerAdapter

logger = logging.getLogger("realtime.servers")

WEBSOCKET_MODULE = "uvicorn.protocols.websockets.websockets_sansio_impl"
HTTP_MODULE = "uvicorn.protocols.http.httptools_impl"
#: What the writers read, on the protocol behind a WebSocket's send and on its ``conn``.
#: ``initial_response`` is read, and ``handshake_complete`` set, by handshake_denied.
WEBSOCKET_ATTRIBUTES = (
    "writable", "handshake_complete", "close_sent", "disconnected", "conn", "transport", "initial_response",
)
#: What the writers read on the request cycle behind an HTTP send (``flow.write_paused`` too).
CYCLE_ATTRIBUTES = ("response_started", "response_complete", "disconnected", "chunked_encoding", "flow", "transport")
#: What the shutdown patch wraps, and reads on the server (the signals it caught: SIGTERM, SIGINT).
SERVER_ATTRIBUTES = ("shutdown",)
SERVER_INSTANCE_ATTRIBUTES = ("_captured_signals",)


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


class UvicornAdapter(ServerAdapter):
    name = "uvicorn"
    modules = ("uvicorn.server",)
    features = Features(
        websocket_writes=True, response_writes=True, close_code_on_disconnect=False, any_close_code=True,
        backpressure=True, abort=True, graceful_shutdown=True, handshake_response=True,
    )
    tested_versions = {"uvicorn": ("0.54.0",), "websockets": ("17.4",), "httptools": ("0.9.0",)}

    def websocket_writer(self, send: Any) -> TransportWriter | None:
        global _OPEN
        protocol = _owner(send, WEBSOCKET_MODULE)
        if protocol is None or self.missing(send):
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
            missing = [f"{type(protocol).__name__}.{name}" for name in WEBSOCKET_ATTRIBUTES
                       if not hasattr(protocol, name)]
            if not missing and not hasattr(protocol.conn, "state"):
                missing.append("websockets ServerProtocol.state")
            return missing
        cycle = _owner(send, HTTP_MODULE)
        if cycle is not None:
            missing = [f"RequestResponseCycle.{name}" for name in CYCLE_ATTRIBUTES if not hasattr(cycle, name)]
            if not missing and not hasattr(cycle.flow, "write_paused"):
                missing.append("FlowControl.write_paused")
            return missing
        return [f"uvicorn's send: a method of {WEBSOCKET_MODULE} or {HTTP_MODULE}"]

    def install(self) -> bool:
        if not self.running():
            return False
        from uvicorn.server import Server

        if getattr(Server, "_realtime_installed", False):
            return True
        missing = [f"uvicorn.server.Server.{name}" for name in SERVER_ATTRIBUTES if not hasattr(Server, name)]
        if missing:
            logger.warning("realtime: %s lacks %s; uvicorn's shutdown is left as it is (1012, no 503)",
                           self.versions(), ", ".join(missing))
            return True
        _patch_shutdown(Server)
        Server._realtime_installed = True
        return True

    def handshake_denied(self, send: Any) -> None:
        protocol = _owner(send, WEBSOCKET_MODULE)
        if protocol is None or not hasattr(protocol, "handshake_complete"):
            return
        if getattr(protocol, "initial_response", None) is not None and getattr(protocol, "close_sent", False):
            protocol.handshake_complete = True  # the whole response went out

    def abort(self, send: Any) -> bool:
        owner = getattr(send, "__self__", None)
        abort = getattr(getattr(owner, "transport", None), "abort", None)
        if abort is None or not type(owner).__module__.startswith("uvicorn."):
            return False
        asyncio.get_running_loop().call_later(ABORT_GRACE_SECONDS, abort)
        return True


def _patch_shutdown(server_class: type) -> None:
    from .. import lifecycle

    original = server_class.shutdown

    async def shutdown(self: Any, sockets: Any = None) -> None:
        if not getattr(self, "_captured_signals", None):
            # Not a signal's doing (an embedding program set should_exit, as tests do): the process
            # goes on, and so must its connections.
            await original(self, sockets)
            return
        started = lifecycle.begin_shutdown()
        if started:
            await asyncio.wait(started, timeout=DRAIN_SECONDS)
        await asyncio.sleep(LINGER_SECONDS)  # still listening: newcomers are answered 503, last frames flush
        await original(self, sockets)

    server_class.shutdown = shutdown


adapter = UvicornAdapter()
