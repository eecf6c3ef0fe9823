"""The ``ws`` object handed to every WebSocketView hook: one per connection.

It speaks ASGI underneath and exposes the small surface the specification uses (``accept``,
``send_json``, ``close``, ``client_state`` ...). State is explicit, and an illegal step raises an
error that names what was expected.
"""

from __future__ import annotations

import asyncio
from enum import Enum
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl

from .closecodes import CloseCode, is_sendable
from .encoding import check_text, dumps, loads, send_event
from .flow import SendGuard


class WebSocketState(Enum):
    """Where a connection is in its life."""

    CONNECTING = 0
    CONNECTED = 1
    DISCONNECTED = 2


class WebSocketDisconnect(Exception):
    """The connection is gone (the client left, or the server closed it); ``code`` says how.

    Every ``send_*`` raises it once the connection is gone, also when the server only learns of
    the departure from the send itself, and with the code the client closed with when known.
    """

    def __init__(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.reason = reason


def parse_headers(scope: dict[str, Any]) -> dict[str, str]:
    """ASGI header pairs as a dict of lower-case names (the last value of a repeated header wins)."""
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", ())
    }


def parse_query(scope: dict[str, Any]) -> dict[str, str]:
    """The query string as a dict (the first value of a repeated parameter wins)."""
    raw = scope.get("query_string", b"")
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        query.setdefault(name, value)
    return query


_DISCONNECTED = object()


class WebSocket:
    """One client connection, as the hooks see it."""

    def __init__(self, scope: dict[str, Any], send: Any, receive: Any = None) -> None:
        self.scope = scope
        #: The server's send behind the slow-consumer policy (realtime.flow).
        self._send = SendGuard(scope, send).send
        #: The server's own send, for realtime.relay to find the transport behind it.
        self._server_send = send
        self.client_state = WebSocketState.CONNECTING
        #: True once the handshake was accepted (and after, when it is closed).
        self.accepted = False
        self.path_params: dict[str, Any] = scope.get("url_route", {}).get("kwargs", {})
        self.user: Any = None
        self.subprotocol: str | None = None
        #: The close code, once known: the server's when it closed first, else the client's.
        self.close_code: int | None = None
        self._receive = receive
        #: Only for views that override ``_handle``: a reader task fills it (see WebSocketView).
        self._inbox: asyncio.Queue[Any] | None = None
        self._gone = False
        self._reading = False
        #: Frames sent and received (realtime.ops), and who closed first: "server" or "client".
        self.sent = self.received = 0
        self.closed_by: str | None = None
        #: Called once the handshake is accepted (the view starts its keepalive there).
        self.on_accept: Any = None

    # The handshake's headers and query are parsed on first use, not per connection: an idle
    # socket whose hooks never read them keeps no decoded copy beside the scope's (the views'
    # own origin and token checks parse the scope without keeping the result).

    @cached_property
    def headers(self) -> dict[str, str]:
        """The handshake's headers, by lower-case name."""
        return parse_headers(self.scope)

    @cached_property
    def query_params(self) -> dict[str, str]:
        """The handshake's query parameters."""
        return parse_query(self.scope)

    # -- sending ------------------------------------------------------------------------------

    async def accept(self, subprotocol: str | None = None, headers: dict[str, str] | None = None) -> None:
        """Complete the handshake."""
        if self.client_state is not WebSocketState.CONNECTING:
            raise RuntimeError(f"accept() expects a CONNECTING socket, not {self.client_state.name}")
        message: dict[str, Any] = {"type": "websocket.accept", "subprotocol": subprotocol}
        if headers:
            message["headers"] = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.subprotocol = subprotocol
        self.client_state = WebSocketState.CONNECTED
        self.accepted = True
        await self._send(message)
        if self.on_accept is not None:
            self.on_accept(self)

    async def send_text(self, text: str) -> None:
        """Send one text frame."""
        if self.client_state is not WebSocketState.CONNECTED:
            raise WebSocketDisconnect(self.close_code or CloseCode.NORMAL)
        await self._emit({"type": "websocket.send", "text": check_text(text)})

    async def send_bytes(self, data: bytes) -> None:
        """Send one binary frame."""
        if self.client_state is not WebSocketState.CONNECTED:
            raise WebSocketDisconnect(self.close_code or CloseCode.NORMAL)
        await self._emit({"type": "websocket.send", "bytes": data})

    async def send_json(self, data: Any, mode: str = "text") -> None:
        """Send ``data`` as compact JSON, in a text frame (or a binary one with ``mode="binary"``)."""
        if mode == "binary":
            await self.send_bytes(dumps(data).encode())
            return
        # send_text inlined, with the event built once per published message: this is the
        # per-subscriber step of every JSON fan-out.
        event = send_event(data)
        if self.client_state is not WebSocketState.CONNECTED:
            raise WebSocketDisconnect(self.close_code or CloseCode.NORMAL)
        await self._emit(event)

    async def send(self, message: dict[str, Any]) -> None:
        """Send a raw ASGI message."""
        await self._emit(message)

    async def _emit(self, message: dict[str, Any]) -> None:
        """The one place an ASGI send happens after accept: a departed client is a disconnect."""
        try:
            await self._send(message)
        except OSError as error:  # ASGI servers raise an OSError for a connection that is gone
            code = getattr(error, "code", None) or await self._departure_code()
            self._disconnected(code)
            raise WebSocketDisconnect(self.close_code or CloseCode.ABNORMAL) from None
        self.sent += 1

    async def _departure_code(self) -> int:
        """The client's close code, from the ``websocket.disconnect`` the server has queued.

        Read only when no one else is reading (a hook called by the default flow): daphne puts the
        code on its error, uvicorn only in the disconnect message.
        """
        if self._reading or self._inbox is not None or self._receive is None or self._gone:
            return CloseCode.ABNORMAL
        try:
            async with asyncio.timeout(1.0):
                while True:
                    message = await self._receive()
                    if message["type"] == "websocket.disconnect":
                        self._gone = True
                        return message.get("code", 1005)
        except TimeoutError:
            return CloseCode.ABNORMAL

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close the connection; a second call does nothing.

        Closing before ``accept()`` makes most servers answer the handshake with HTTP 403, so the
        client never sees ``code``; the views accept first whenever a client should see the code.
        """
        if not is_sendable(int(code)):
            raise ValueError(f"{code} is not a close code a server may send (1000-1003, 1007-1014, 3000-4999)")
        if self.client_state is WebSocketState.DISCONNECTED:
            return
        self.client_state = WebSocketState.DISCONNECTED
        self.close_code = int(code)
        self.closed_by = "server"
        self._wake_receiver()
        try:
            await self._send({"type": "websocket.close", "code": int(code), "reason": reason or ""})
        except OSError:  # the client is already gone: the connection is closed either way
            self._gone = True

    # -- receiving ----------------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        """The next ``websocket.receive`` message; raises WebSocketDisconnect when the socket is gone."""
        if self._inbox is not None:
            message = await self._inbox.get()
            if message is _DISCONNECTED:
                self._inbox.put_nowait(_DISCONNECTED)  # every later receive() sees it too
                raise WebSocketDisconnect(self.close_code or CloseCode.NORMAL)
            self.received += 1
            return message
        while not self._gone:
            self._reading = True
            try:
                message = await self._receive()
            finally:
                self._reading = False
            if message["type"] == "websocket.disconnect":
                self._disconnected(message.get("code", 1005))
                break
            if self.client_state is WebSocketState.CONNECTED:
                self.received += 1
                return message
            # the server has closed: frames still in flight are not for anyone
        raise WebSocketDisconnect(self.close_code or CloseCode.NORMAL)

    async def receive_text(self) -> str:
        message = await self.receive()
        if message.get("text") is None:
            raise TypeError("expected a text frame, got a binary one")
        return message["text"]

    async def receive_bytes(self) -> bytes:
        message = await self.receive()
        if message.get("bytes") is None:
            raise TypeError("expected a binary frame, got a text one")
        return message["bytes"]

    async def receive_json(self) -> Any:
        message = await self.receive()
        payload = message.get("text")
        return loads(payload if payload is not None else message["bytes"])

    # -- driven by the view -------------------------------------------------------------------

    def _use_inbox(self, size: int) -> asyncio.Queue[Any]:
        self._inbox = asyncio.Queue(size)
        return self._inbox

    def _disconnected(self, code: int) -> None:
        """The client has gone: record its code unless the server closed first."""
        if self.close_code is None:
            self.close_code = code
            self.closed_by = "client"
        self.client_state = WebSocketState.DISCONNECTED
        self._gone = True
        self._wake_receiver()

    def _wake_receiver(self) -> None:
        if self._inbox is None:
            return
        try:
            self._inbox.put_nowait(_DISCONNECTED)
        except asyncio.QueueFull:
            # Make room: whatever is queued will never be processed by a closed connection.
            while not self._inbox.empty():
                self._inbox.get_nowait()
            self._inbox.put_nowait(_DISCONNECTED)

    def __repr__(self) -> str:
        return f"<WebSocket {self.scope.get('path')!r} {self.client_state.name}>"
