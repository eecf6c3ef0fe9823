"""The ``ws`` object handed to every WebSocketView hook: one per connection.

It speaks ASGI underneath and exposes the small surface the specification uses (``accept``,
``send_json``, ``close``, ``client_state`` ...). State is explicit, and an illegal step raises an
error that names what was expected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping
from enum import Enum
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl

from . import servers
from .closecodes import CloseCode, is_sendable
from .encoding import SharedMessage, check_text, dumps, loads, send_event
from .flow import SendGuard
from .inbound import InboundMeter, message_size


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

#: The ASGI extension that lets an application answer a WebSocket handshake with an HTTP response.
HTTP_RESPONSE = "websocket.http.response"


def can_deny_with_status(scope: dict[str, Any]) -> bool:
    """Whether the server lets this handshake be answered with an HTTP status (``websocket.http.response``)."""
    return HTTP_RESPONSE in (scope.get("extensions") or {})


async def deny_handshake(
    scope: dict[str, Any], send: Any, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None
) -> bool:
    """Answer a WebSocket handshake with an HTTP response; False (nothing sent) where the server cannot.

    The one way `realtime` refuses an upgrade with a status: the router's 404 for an unknown path,
    and the admission's 503 during shutdown.
    """
    if not can_deny_with_status(scope):
        return False
    from . import servers

    fields = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
    fields.append((b"content-type", b"text/plain; charset=utf-8"))
    await send({"type": "websocket.http.response.start", "status": status, "headers": fields})
    await send({"type": "websocket.http.response.body", "body": body})
    servers.handshake_denied(send)
    return True


class WebSocket:
    """One client connection, as the hooks see it."""

    #: Frames a ``stream()`` wrote straight to the transport (counted in ``sent`` too); a class
    #: default, so that a connection that never writes one keeps no attribute for it.
    direct = 0

    def __init__(
        self, scope: dict[str, Any], send: Any, receive: Any = None, view: Any = None, on_accept: Any = None
    ) -> None:
        self.scope = scope
        #: The server's send behind the slow-consumer policy (realtime.flow).
        self._send = SendGuard(scope, send).send
        #: The server's own send, for realtime.relay to find the transport behind it.
        self._server_send = send
        #: The view serving the connection. It keeps the user and the credentials (``user``,
        #: ``auth_token`` and ``auth_error`` here read the view's): they are kept once.
        self.view = view
        self.client_state = WebSocketState.CONNECTING
        #: True once the handshake was accepted (and after, when it is closed).
        self.accepted = False
        #: True when the handshake was refused (accepted, then closed with the refusal's code): realtime.ops counts it.
        self.refused = False
        self.path_params: dict[str, Any] = scope.get("url_route", {}).get("kwargs", {})
        self.subprotocol: str | None = None
        #: The close code, once known: the server's when it closed first, else the client's.
        self.close_code: int | None = None
        self._receive = receive
        #: Only while a reader task reads the client beside a handler that may not (see WebSocketView).
        self._inbox: asyncio.Queue[Any] | None = None
        #: The bytes held of the client's messages (realtime.inbound), from accept() until release_inbound().
        self.inbound: InboundMeter | None = None
        self._overflow_close: asyncio.Task[None] | None = None
        self._gone = False
        self._reading = False
        #: Frames sent and received (realtime.ops), and who closed first: "server" or "client".
        self.sent = self.received = 0
        self.closed_by: str | None = None
        #: Called once the handshake is accepted (the view starts its keepalive there).
        self.on_accept: Any = on_accept
        #: On connections realtime.ops samples: the histogram ``send_json`` feeds with the
        #: publish-to-send latency of published messages.
        self.latency: Any = None

    # -- the user and the credentials: the view's ----------------------------------------------

    @property
    def user(self) -> Any:
        """The connection's user (the view's ``self.user``); None for an anonymous client."""
        return getattr(self.view, "user", None)

    @user.setter
    def user(self, user: Any) -> None:
        if self.view is None:
            raise AttributeError("A WebSocket keeps its user on its view: make it with WebSocket(..., view=view)")
        self.view.user = user

    @property
    def auth_token(self) -> Any:
        """The validated token the connection authenticated with (the view's), or None."""
        return getattr(self.view, "auth_token", None)

    @property
    def auth_error(self) -> Any:
        """The refusal of a token that counted as none (the view's ``AuthenticationFailed``), or None."""
        return getattr(self.view, "auth_error", None)

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
        if not self.refused:
            self._meter_inbound()
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
        else:
            # send_text inlined, with the event built once per published message: this is the
            # per-subscriber step of every JSON fan-out.
            event = send_event(data)
            if self.client_state is not WebSocketState.CONNECTED:
                raise WebSocketDisconnect(self.close_code or CloseCode.NORMAL)
            await self._emit(event)
        if self.latency is not None and type(data) is SharedMessage and data.published_at is not None:
            self.latency.observe(time.perf_counter() - data.published_at)

    async def send(self, message: dict[str, Any]) -> None:
        """Send a raw ASGI message."""
        await self._emit(message)

    async def _emit(self, message: dict[str, Any]) -> None:
        """The one place an ASGI send happens after accept: a departed client is a disconnect."""
        try:
            await self._send(message)
        except OSError as error:  # ASGI servers raise an OSError for a connection that is gone
            code = getattr(error, "code", None) or await self._departure_code()
            if code is None:
                # Another task is reading: the server's websocket.disconnect reaches it with the
                # client's code (uvicorn gives it nowhere else). Only stop sending meanwhile.
                self.client_state = WebSocketState.DISCONNECTED
            else:
                self._disconnected(code)
            raise WebSocketDisconnect(self.close_code or CloseCode.ABNORMAL) from None
        self.sent += 1

    async def _departure_code(self) -> int | None:
        """The client's close code, from the ``websocket.disconnect`` the server has queued.

        Read only when no one else is reading (a hook called by the default flow): daphne puts the
        code on its error, uvicorn only in the disconnect message. None while another task reads
        (a reader beside the handler, an outbox task sending while the connection's task reads):
        that task gets the message, and the code.
        """
        if self._gone or self._receive is None:
            return CloseCode.ABNORMAL
        if self._reading or self._inbox is not None:
            return None
        try:
            async with asyncio.timeout(1.0):
                while True:
                    await self._read()  # frames still in flight are not for anyone
        except WebSocketDisconnect:
            return self.close_code or 1005
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

    def receive(self) -> Awaitable[dict[str, Any]]:
        """The next ``websocket.receive`` message; raises WebSocketDisconnect when the socket is gone.

        Await it. It is no coroutine of its own but hands over the read's, so that a socket waiting
        for its client keeps one frame, not two.
        """
        inbox = self._inbox
        return self._read() if inbox is None else self._read_inbox(inbox)

    async def _read(self, for_inbox: bool = False) -> dict[str, Any]:
        """Read the client: the one place the server's ``receive`` is awaited, by whoever reads the
        connection (the view's default flow in its own task, or the reader task that fills the inbox).

        A message handed on is given back to the inbound meter here, or (``for_inbox``) when the
        handler takes it from the inbox.
        """
        while not self._gone:
            self._reading = True
            try:
                message = await self._receive()
            finally:
                self._reading = False
            if message["type"] == "websocket.disconnect":
                self._disconnected(message.get("code", 1005))
                break
            meter = self.inbound
            if meter is not None and meter.server:
                meter.received()
                if not (for_inbox and self.client_state is WebSocketState.CONNECTED):
                    meter.taken()
            if self.client_state is WebSocketState.CONNECTED:
                self.received += 1
                return message
            # the server has closed: frames still in flight are not for anyone
        raise WebSocketDisconnect(self.close_code or CloseCode.NORMAL)

    async def _read_inbox(self, inbox: asyncio.Queue[Any]) -> dict[str, Any]:
        message = await inbox.get()
        if message is _DISCONNECTED:
            inbox.put_nowait(_DISCONNECTED)  # every later receive() sees it too
            raise WebSocketDisconnect(self.close_code or CloseCode.NORMAL)
        if self.inbound is not None:
            self.inbound.taken()
        return message

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

    async def deny(
        self, status: int, headers: Mapping[str, str] | None, body: str, code: int, reason: str,
        subprotocol: str | None = None,
    ) -> None:
        """Refuse the handshake with an HTTP ``status`` (and ``headers``) where the server can answer one;
        elsewhere accept, then close with ``code`` and ``reason``, so that the client still sees why."""
        if self.client_state is not WebSocketState.CONNECTING:
            raise RuntimeError(f"deny() expects a CONNECTING socket, not {self.client_state.name}")
        self.refused = True
        if await deny_handshake(self.scope, self._server_send, status, body.encode(), headers):
            self.client_state = WebSocketState.DISCONNECTED
            # No close frame was sent: the refusal is labelled by its status in realtime.ops, as the router's 404.
            self.close_code, self.closed_by = status, "server"
            self._gone = True
            return
        await self.accept(subprotocol=subprotocol)
        await self.close(code, reason)

    async def refuse(self, code: int, reason: str, subprotocol: str | None = None) -> None:
        """Refuse the handshake so that the client sees ``code`` and ``reason``: accept, then close.

        (Closing before ``accept()`` makes most servers answer HTTP 403, which hides the code.)
        """
        self.refused = True
        await self.accept(subprotocol=subprotocol)
        await self.close(code, reason)

    async def read_into_inbox(self, size: int) -> None:
        """Read the client into an inbox of ``size`` messages that ``receive()`` then serves, until it
        leaves: for a handler that may never read. A client that fills the inbox is closed with 1008."""
        inbox = self._inbox = asyncio.Queue(size)
        try:
            while True:
                message = await self._read(for_inbox=True)
                if inbox.full():
                    await self.close(CloseCode.POLICY_VIOLATION, "Too many unread messages")
                else:
                    inbox.put_nowait(message)
                    meter = self.inbound
                    if meter is not None and not meter.server:  # no server counts it: the inbox is what is held
                        meter.charge(message_size(message))
        except WebSocketDisconnect:
            return

    # -- inbound bytes (realtime.inbound) -------------------------------------------------------

    def _meter_inbound(self) -> None:
        """Count what is held of the client's messages, from the accept on: by the server when its
        adapter can (and pause reading past the bounds), else in the inbox alone."""
        client = self.scope.get("client")
        meter = self.inbound = InboundMeter(client[0] if client else None, self._inbound_overflow)
        servers.meter_inbound(self._server_send, meter)

    def _inbound_overflow(self, reason: str) -> None:
        """Called by the meter, from the server's read: close with 1008, and drop the TCP connection
        soon whatever it buffers, since a client that does not read would never answer the close
        (uvicorn: ``servers.abort``, a second later; daphne: autobahn's close handshake times out)."""
        if self._overflow_close is None and self.client_state is WebSocketState.CONNECTED:
            servers.abort(self._server_send)
            self._overflow_close = asyncio.get_running_loop().create_task(
                self.close(CloseCode.POLICY_VIOLATION, reason)
            )

    def release_inbound(self) -> None:
        """The connection has ended: its client's bytes are no longer held (by the meter's count)."""
        if self.inbound is not None:
            self.inbound.release()

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
