"""uvicorn's side of the direct delivery path: ready-made frames to a WebSocket's asyncio transport.

uvicorn's default WebSocket protocol (``websockets-sansio``) waits for its transport's
``resume_writing`` before every send, so backpressure needs nothing from us. For ``relay`` views
(``realtime.relay``) a published message's frame, built once, can be written straight to each
socket's transport while the socket is open and its transport has room; the frames of the
websockets library for a server are the same unmasked bytes. The check uses uvicorn's own flags
(``handshake_complete``, ``close_sent``, ``disconnected``, the ``writable`` event) and the websockets
connection's state, so this module knows one protocol class of uvicorn 0.x; for any other (the
legacy ``websockets`` or ``wsproto`` implementations) it returns no writer and the relay takes the
ASGI path.

SSE relays (``realtime.sse_relay``) get the same on uvicorn's ``httptools`` HTTP protocol (the one
``uvicorn[standard]`` runs): a streaming response there is sent chunked, one chunk per ASGI body
message, so a frame written as one chunk to the transport is what uvicorn would have written. The
check reads the request cycle's own flags (headers sent, not complete, not disconnected, chunked)
and its flow control (``write_paused``). uvicorn's ``h11`` protocol keeps the framing in h11's state
machine, so it gets no writer: there the response drains its queue through Django's send.
"""

from __future__ import annotations

from typing import Any


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


def writer_for(send: Any) -> TransportWriter | None:
    """A TransportWriter for the socket behind uvicorn's ASGI ``send``, or None."""
    global _OPEN
    protocol = getattr(send, "__self__", None)
    if protocol is None or type(protocol).__module__ != "uvicorn.protocols.websockets.websockets_sansio_impl":
        return None
    import uvicorn
    from websockets.protocol import State

    if not uvicorn.__version__.startswith("0."):
        return None
    _OPEN = State.OPEN
    if not all(hasattr(protocol, name) for name in ("writable", "handshake_complete", "close_sent", "conn")):
        return None
    return TransportWriter(protocol)


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


def http_writer_for(send: Any) -> ChunkWriter | None:
    """A ChunkWriter for the streaming response behind uvicorn's ``httptools`` ASGI ``send``, or None."""
    cycle = getattr(send, "__self__", None)
    if cycle is None or type(cycle).__module__ != "uvicorn.protocols.http.httptools_impl":
        return None
    import uvicorn

    if not uvicorn.__version__.startswith("0."):
        return None
    names = ("response_started", "response_complete", "disconnected", "chunked_encoding", "flow", "transport")
    if not all(hasattr(cycle, name) for name in names) or not hasattr(cycle.flow, "write_paused"):
        return None
    return ChunkWriter(cycle)
