"""WebSocketView: a class-based WebSocket endpoint, one instance per connection.

It is a Channels ``AsyncConsumer`` (``as_asgi()``, ``scope``), but it replaces the consumer's
per-message dispatch loop, deliberately:

- Channels dispatches one event at a time and hops to a thread (``aclose_old_connections``) before
  each handler; a push loop inside a handler would block disconnects. Here the client reader,
  the hook runner, the ``stream()`` pusher and the keepalive are separate tasks, and every task of
  a connection is cancelled when it ends.
- No per-connection channel-layer channel is created: fan-out goes through :class:`realtime.Channel`,
  one layer subscription per process and channel.

Flow: subprotocol check → authentication → permissions (4003; a refused token: 4003 ``token_...``) →
``accept`` → ``on_connect`` → ``on_receive`` per message (and ``stream()`` items pushed) →
``on_disconnect`` exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async

from .auth import AuthenticationFailed, TokenAuthenticator
from .closecodes import CloseCode, WebSocketException, refused_credentials_code
from .conf import setting
from .connection import WebSocket, WebSocketDisconnect, WebSocketState, parse_headers, parse_query
from .encoding import loads
from .heartbeat import Beat, beat_for
from .memory import open_connections
from .ops.connections import track_websocket
from .permissions import first_denial, get_permissions
from .revocation import close_soon, revocations
from .security import Held, origin_allowed, websocket_addresses, websocket_users
from .throttling import MessageRateThrottle

logger = logging.getLogger("realtime.websocket")

ENCODINGS = ("json", "text", "bytes")

#: The application-level heartbeat sent every ``keepalive`` seconds, per encoding.
HEARTBEATS: dict[str, dict[str, Any]] = {
    "json": {"type": "websocket.send", "text": '{"type":"ping"}'},
    "text": {"type": "websocket.send", "text": "ping"},
    "bytes": {"type": "websocket.send", "bytes": b""},
}


def _origin_allowed(scope: dict[str, Any]) -> bool:
    """The handshake's Origin check, in a function so that the parsed headers are not kept in the
    connection's frame for its whole life."""
    headers = parse_headers(scope)
    if origin_allowed(headers, scope.get("scheme")):
        return True
    logger.info("Refused a WebSocket from origin %r", headers.get("origin"))
    return False


async def _authenticate_ws(ws: WebSocket, view: Any = None) -> Any:
    """The user behind the connection's token, or None (anonymous or refused credentials).

    For the specification's push-only pattern: a refused token counts as none, and is kept in
    ``ws.auth_error`` so that ``_check_ws_permissions`` can name it in the denial's reason.
    """
    authenticator = getattr(view, "authenticator_class", TokenAuthenticator)()
    try:
        result = await authenticator.authenticate(ws.headers, ws.query_params)
    except AuthenticationFailed as error:
        ws.auth_error = error
        return None
    if result is None:
        return None
    ws.user, ws.auth_token = result
    return ws.user


async def _check_ws_permissions(
    permission_classes: Any, ws: WebSocket, user: Any, view: Any = None
) -> str | None:
    """The denial reason of the first permission that refuses, or None when all allow.

    When the client's token was refused, the reason is the refusal's (``"token_expired: ..."``):
    the client should refresh its token rather than give up.
    """
    ws.user = user
    denied = await first_denial(get_permissions(permission_classes), ws, view)
    if denied is None:
        return None
    refusal = getattr(ws, "auth_error", None)
    if refusal is not None:
        return refusal.close_reason()
    return str(getattr(denied, "message", "Permission denied"))


class WebSocketView(AsyncConsumer):
    """Base class for WebSocket endpoints. Override the ``on_*`` hooks, and ``stream`` to push."""

    #: Checked before ``accept()``; empty means public.
    permission_classes: ClassVar[list[Any]] = []
    #: ``"json"``, ``"text"`` or ``"bytes"``: how frames are decoded for ``on_receive``.
    encoding: ClassVar[str] = "json"
    #: A subprotocol the client must offer; refused with 1008 when it does not.
    subprotocol: ClassVar[str | None] = None
    #: Seconds between application-level heartbeats; 0 disables them.
    keepalive: ClassVar[float] = 30
    #: Largest inbound message accepted, in bytes (characters for text frames); over it: 1009.
    #: None: ``REALTIME["MAX_MESSAGE_SIZE"]``.
    max_message_size: ClassVar[int | None] = None
    #: Inbound rate limits; None: one MessageRateThrottle at ``REALTIME["MESSAGE_RATE"]``.
    throttle_classes: ClassVar[list[type] | None] = None
    #: A json message ``{"type": "realtime.refresh", "token": "<access token>"}`` replaces the
    #: connection's token in-band (same user only), so it is not closed when the old one expires.
    refresh_message_type: ClassVar[str] = "realtime.refresh"
    #: How tokens are found and validated.
    authenticator_class: ClassVar[type[TokenAuthenticator]] = TokenAuthenticator
    #: A Channel whose every message is sent to the client, by the direct delivery path
    #: (``realtime.relay``: the frame built once per publish and written to each socket, no task per
    #: socket per message). ``relay_message`` filters or transforms. Use ``stream()`` for anything else.
    relay: ClassVar[Any] = None
    #: Fan-out goes through realtime.Channel, so no per-connection layer channel is made.
    channel_layer_alias: ClassVar[str | None] = None

    def __init__(self, **initkwargs: Any) -> None:
        for key, value in initkwargs.items():
            setattr(self, key, value)
        if self.encoding not in ENCODINGS:
            raise ValueError(f"{type(self).__name__}.encoding must be one of {ENCODINGS}, not {self.encoding!r}")
        self.user: Any = None
        self.params: dict[str, Any] = {}
        #: The connection's background tasks; a set only once there is one (most sockets have none).
        self._tasks: set[asyncio.Task[Any]] | tuple[()] = ()
        self._releases: list[Any] = []
        self._expiry: asyncio.Task[Any] | None = None
        self._heartbeat: Beat | None = None
        self._relay_sink: Any = None

    # -- hooks --------------------------------------------------------------------------------

    async def on_connect(self, ws: WebSocket, **params: Any) -> None:
        """Called after ``accept()``, with the path parameters."""

    async def on_receive(self, ws: WebSocket, data: Any) -> None:
        """Called for each message, decoded according to ``encoding``."""

    async def on_disconnect(self, ws: WebSocket, code: int) -> None:
        """Called exactly once when the connection ends, whoever ended it."""

    def stream(self, ws: WebSocket, **params: Any) -> AsyncIterator[Any] | None:
        """Override as an async generator to push: each item is sent with the view's encoding.

        It starts after ``on_connect`` and is cancelled when the connection ends; when it
        finishes the connection is closed with 1000.
        """
        return None

    def relay_message(self, message: Any) -> Any:
        """For ``relay`` views: the message to send for a published one, or None to skip it.

        Called in the publisher's turn for every socket, so keep it cheap and never block; return
        the message itself to keep the frame shared by every socket.
        """
        return message

    def relay_gap(self, missed: int) -> Any:
        """For ``relay`` views: a message telling the client ``missed`` messages were dropped, or None."""
        return None

    # -- ASGI entry point ---------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scope = scope
        self.channel_layer = None
        ws = self.ws = WebSocket(scope, send, receive)
        ws.view = self
        ws.on_accept = self._start_keepalive
        self.params = ws.path_params
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        overridden = type(self)._handle is not WebSocketView._handle
        open_connections.opened()
        record = track_websocket(self, ws)
        try:
            if not _origin_allowed(scope):
                await self._refuse(ws, CloseCode.POLICY_VIOLATION, "Origin not allowed")
            elif overridden:
                # A custom push loop (the specification's pattern) may never read: it runs as a
                # task beside a reader, and is cancelled when the client leaves.
                ws._use_inbox(64)
                handler = self._spawn(self._run(ws))
                reader = self._spawn(self._read(ws, receive))
                done, _ = await asyncio.wait((handler, reader), return_when=asyncio.FIRST_COMPLETED)
                (reader if handler in done else handler).cancel()
                await asyncio.gather(handler, reader, return_exceptions=True)
            else:
                # The default flow reads the client itself, in the connection's own task: no
                # reader task and no inbox per connection, and no _run frame (it catches what
                # _run would).
                await self._handle(ws)
                if ws.client_state is not WebSocketState.DISCONNECTED:
                    await ws.close(CloseCode.NORMAL)
        except asyncio.CancelledError:
            # The server is shutting down (daphne cancels every application on SIGTERM): say so.
            with contextlib.suppress(Exception):
                await ws.close(CloseCode.GOING_AWAY, "Server shutting down")
            raise
        finally:
            if self._heartbeat is not None:
                self._heartbeat.leave(self)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._stop_relay()
            for release in self._releases:
                release()
            open_connections.closed()
            record.close()

    async def _read(self, ws: WebSocket, receive: Any) -> None:
        """For overridden ``_handle``: pump client messages into the inbox until the client leaves."""
        try:
            await self._pump(ws, receive)
        except Exception:
            logger.exception("Reading from the client failed")
            ws._disconnected(CloseCode.INTERNAL_ERROR)  # wakes the handler waiting on the inbox
            raise

    async def _pump(self, ws: WebSocket, receive: Any) -> None:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                if ws.client_state is not WebSocketState.CONNECTED:
                    continue
                if ws._inbox.full():
                    await ws.close(CloseCode.POLICY_VIOLATION, "Too many unread messages")
                else:
                    ws._inbox.put_nowait(message)
            elif kind == "websocket.disconnect":
                ws._disconnected(message.get("code", 1005))
                return

    async def _run(self, ws: WebSocket) -> None:
        try:
            await self._handle(ws)
        except Exception:
            logger.exception("Unhandled error in %s", type(self).__name__)
            await ws.close(CloseCode.INTERNAL_ERROR)
        if ws.client_state is not WebSocketState.DISCONNECTED:
            await ws.close(CloseCode.NORMAL)

    # -- the default flow (the specification's ``_handle``) ------------------------------------

    async def _handle(self, ws: WebSocket) -> None:
        """Admit, accept, run the hooks, and always call ``on_disconnect``."""
        try:
            if not await self._admit(ws):
                return
            await ws.accept(subprotocol=self.subprotocol)
        except Exception:
            logger.exception("Unhandled error in %s", type(self).__name__)
            await ws.close(CloseCode.INTERNAL_ERROR)
            return
        code: int = CloseCode.NORMAL
        throttles: list[Any] | None = None  # made at the first message: an idle socket keeps none
        limit = self.max_message_size if self.max_message_size is not None else setting("MAX_MESSAGE_SIZE")
        try:
            self._watch_expiry(ws, getattr(ws, "auth_token", None))
            await self.on_connect(ws, **self.params)
            self._start_stream(ws)
            while True:
                message = await ws.receive()
                if throttles is None:
                    throttles = [throttle() for throttle in self._throttle_classes()]
                for throttle in throttles:
                    if not throttle.allow_message(ws, self):
                        raise WebSocketException(CloseCode.POLICY_VIOLATION, throttle.message)
                data = self._decode(message, limit)
                if self.encoding == "json" and type(data) is dict and data.get("type") == self.refresh_message_type:
                    await self._refresh(ws, data.get("token"))
                    continue
                await self.on_receive(ws, data)
        except WebSocketDisconnect as disconnect:
            code = disconnect.code
        except WebSocketException as error:
            code = error.code
            await ws.close(error.code, error.reason)
        except asyncio.CancelledError:
            code = ws.close_code or CloseCode.GOING_AWAY
            raise
        except Exception:
            logger.exception("Unhandled error in %s", type(self).__name__)
            code = CloseCode.INTERNAL_ERROR
            await ws.close(code)
        finally:
            self._cancel_tasks()
            await self._call_on_disconnect(ws, code)

    async def _admit(self, ws: WebSocket) -> bool:
        """Subprotocol, credentials, permissions. A refusal is accepted then closed, so clients see the code."""
        if self.subprotocol and self.subprotocol not in (self.scope.get("subprotocols") or ()):
            return await self._refuse(ws, CloseCode.POLICY_VIOLATION, f"Subprotocol {self.subprotocol!r} required")
        ws.auth_error = None
        try:
            result = await self.authenticator_class().authenticate(parse_headers(ws.scope), parse_query(ws.scope))
        except AuthenticationFailed as error:
            if setting("STRICT_TOKENS"):
                return await self._refuse(ws, CloseCode.UNAUTHORIZED, error.close_reason())
            # The specification's behaviour: a refused token counts as none. A public endpoint
            # serves the client as anonymous; a protected one names the refusal when it denies.
            logger.info("Refused a token (%s); going on as anonymous", error.code)
            ws.auth_error, result = error, None
        if result is not None:
            ws.user, ws.auth_token = result
            self.user = ws.user
        denied = await _check_ws_permissions(self.permission_classes, ws, self.user, self)
        if denied is not None:
            return await self._refuse(ws, CloseCode.FORBIDDEN, denied)
        if not self._within_caps(ws):
            return await self._refuse(ws, CloseCode.POLICY_VIOLATION, "Too many connections")
        if self.user is not None and getattr(self.user, "pk", None) is not None:
            closer = close_soon(lambda: ws.close(refused_credentials_code(), "session_revoked"))
            self._releases.append(revocations.register(self.user.pk, closer))
        return True

    def _within_caps(self, ws: WebSocket) -> bool:
        """Count this connection against the per-user and per-address caps (released on exit)."""
        caps = []
        if self.user is not None and getattr(self.user, "pk", None) is not None:
            caps.append((websocket_users, self.user.pk, setting("MAX_CONNECTIONS_PER_USER")))
        client = self.scope.get("client")
        if client:
            caps.append((websocket_addresses, client[0], setting("MAX_CONNECTIONS_PER_IP")))
        held = Held()
        self._releases.append(held)
        for counter, key, limit in caps:
            if not counter.acquire(key, limit):
                return False
            held.add(counter, key)
        return True

    def _throttle_classes(self) -> list[type]:
        return list(self.throttle_classes) if self.throttle_classes is not None else [MessageRateThrottle]

    # -- credentials that expire on open connections ------------------------------------------

    def _watch_expiry(self, ws: WebSocket, token: Any) -> None:
        """Close (4003, or 4001 with STRICT_TOKENS) when the token expires, unless refreshed in-band first."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        expires = token.get("exp") if token is not None else None
        if expires is None or not setting("EXPIRE_WITH_TOKEN"):
            return
        self._expiry = self._spawn(self._expire(ws, float(expires)))

    async def _expire(self, ws: WebSocket, expires: float) -> None:
        await asyncio.sleep(max(0.0, expires - time.time()))
        await ws.close(refused_credentials_code(), "token_expired: refresh the token and reconnect")

    async def _refresh(self, ws: WebSocket, raw_token: Any) -> None:
        """Swap the connection's token for a fresh one of the same user; closes as at expiry when refused."""
        authenticator = self.authenticator_class()
        try:
            if not isinstance(raw_token, str):
                raise AuthenticationFailed("The refresh message needs a 'token' string", "token_not_valid")
            validated = authenticator.get_validated_token(raw_token)
            user = await database_sync_to_async(authenticator.get_user)(validated)
        except AuthenticationFailed as error:
            raise WebSocketException(refused_credentials_code(), error.close_reason()) from None
        if self.user is None or user.pk != self.user.pk:
            raise WebSocketException(refused_credentials_code(), "user_mismatch: the token belongs to another user")
        ws.auth_token = validated
        self._watch_expiry(ws, validated)
        await ws.send_json({"type": self.refresh_message_type, "ok": True, "exp": validated.get("exp")})

    async def _refuse(self, ws: WebSocket, code: int, reason: str) -> bool:
        ws.refused = True  # counted as a refused handshake (realtime.ops)
        offered = self.scope.get("subprotocols") or ()
        await ws.accept(subprotocol=self.subprotocol if self.subprotocol in offered else None)
        await ws.close(code, reason)
        return False

    def _decode(self, message: dict[str, Any], limit: int) -> Any:
        """Decode one frame for ``on_receive``; a frame of the wrong kind or shape closes the socket."""
        text, data = message.get("text"), message.get("bytes")
        if self.encoding == "bytes":
            if data is None:
                raise WebSocketException(CloseCode.UNSUPPORTED_DATA, "Binary frames only")
            if len(data) > limit:
                raise WebSocketException(CloseCode.MESSAGE_TOO_BIG, "Message too big")
            return data
        if text is None:
            raise WebSocketException(CloseCode.UNSUPPORTED_DATA, "Text frames only")
        if len(text) > limit:
            raise WebSocketException(CloseCode.MESSAGE_TOO_BIG, "Message too big")
        if self.encoding == "text":
            return text
        try:
            return loads(text)
        except (ValueError, RecursionError):
            raise WebSocketException(CloseCode.INVALID_PAYLOAD, "Malformed JSON") from None

    # -- background tasks ---------------------------------------------------------------------

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        tasks = self._tasks
        if type(tasks) is not set:
            tasks = self._tasks = set()
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    def _start_keepalive(self, ws: WebSocket) -> None:
        """Heartbeats run on one timer shared by every socket (realtime.heartbeat), not a task."""
        if self.keepalive and self.keepalive > 0:
            self._heartbeat = beat_for(float(self.keepalive))
            self._heartbeat.join(self)

    def _beat(self) -> None:
        ws = self.ws
        if ws.client_state is WebSocketState.CONNECTED:
            self._spawn(self._send_heartbeat(ws))
        elif self._heartbeat is not None:
            self._heartbeat.leave(self)

    async def _send_heartbeat(self, ws: WebSocket) -> None:
        with contextlib.suppress(WebSocketDisconnect):  # the reader learns of the departure too
            await ws.send(HEARTBEATS[self.encoding])

    def _start_stream(self, ws: WebSocket) -> None:
        if self.relay is not None:
            self._start_relay(ws, self.relay)
            return
        items = self.stream(ws, **self.params)
        if items is not None:
            self._spawn(self._push(ws, items))

    def _start_relay(self, ws: WebSocket, channel: Any) -> None:
        from . import servers
        from .relay import RelaySink

        send = ws._server_send
        writer = servers.websocket_writer(send)
        sink = RelaySink(self, ws, writer, channel)
        channel.attach(sink)
        # Unsubscribed as soon as the connection ends (before its tasks are cancelled), and again
        # on exit in case it never started: a sink must not spawn a task for a closed socket.
        self._relay_sink = sink

    def _stop_relay(self) -> None:
        if self._relay_sink is not None:
            self._relay_sink.stop()

    async def _push(self, ws: WebSocket, items: AsyncIterator[Any]) -> None:
        send = {"json": ws.send_json, "text": ws.send_text, "bytes": ws.send_bytes}[self.encoding]
        try:
            async for item in items:
                await send(item)
        except WebSocketDisconnect:
            return
        except WebSocketException as error:
            await ws.close(error.code, error.reason)
            return
        except Exception:
            logger.exception("Unhandled error in %s.stream", type(self).__name__)
            await ws.close(CloseCode.INTERNAL_ERROR)
            return
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()
        await ws.close(CloseCode.NORMAL)

    def _cancel_tasks(self) -> None:
        self._stop_relay()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()

    async def _call_on_disconnect(self, ws: WebSocket, code: int) -> None:
        try:
            await self.on_disconnect(ws, code)
        except Exception:
            logger.exception("Unhandled error in %s.on_disconnect", type(self).__name__)
