"""WebSocketView: a class-based WebSocket endpoint, one instance per connection.

It is a Channels ``AsyncConsumer`` (``as_asgi()``, ``scope``), but it replaces the consumer's
per-message dispatch loop, deliberately:

- Channels dispatches one event at a time and hops to a thread (``aclose_old_connections``) before
  each handler; a push loop inside a handler would block disconnects. Here the handler runs in the
  connection's own task and reads the client there, through ``ws.receive()`` (the one read path:
  no reader task and no inbox per connection); the ``stream()`` pusher is a task of its own, and
  every task of a connection is cancelled when it ends. A handler that may never read (the
  specification's push-only ``_handle``) gets a reader task beside it (see ``handler_reads``).
- No per-connection channel-layer channel is created: fan-out goes through :class:`realtime.Channel`,
  one layer subscription per process and channel.

Flow: origin and subprotocol checks → admission (``realtime.admission``: credentials, permissions,
caps; a refusal is accepted then closed with its code, but during shutdown the handshake is
answered 503 with ``Retry-After``) → ``accept`` → ``on_connect`` → ``on_receive``
per message (and ``stream()`` items pushed) → ``on_disconnect`` exactly once.
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

from . import lifecycle
from .admission import DENIED, REVOKED, Admitted, Denied, admit, credentials_of, user_cap, websocket_caps
from .auth import AuthenticationFailed, TokenAuthenticator
from .closecodes import CloseCode, WebSocketException, refused_credentials_code
from .conf import setting
from .connection import WebSocket, WebSocketDisconnect, WebSocketState, parse_headers, parse_query
from .encoding import SharedMessage, loads
from .forwarding import MESSAGE, forwarded_channel
from .heartbeat import Beat, beat_for
from .memory import open_connections
from .ops.connections import live, track_websocket
from .permissions import first_denial, get_permissions
from .security import origin_allowed
from .throttling import MessageRateThrottle

logger = logging.getLogger("realtime.websocket")

ENCODINGS = ("json", "text", "bytes")

#: The application-level heartbeat sent every ``keepalive`` seconds, per encoding.
HEARTBEATS: dict[str, dict[str, Any]] = {
    "json": {"type": "websocket.send", "text": '{"type":"ping"}'},
    "text": {"type": "websocket.send", "text": "ping"},
    "bytes": {"type": "websocket.send", "bytes": b""},
}


def _origin_refusal(scope: dict[str, Any], authenticator: Any) -> str | None:
    """The handshake's Origin check: None, or the reason of its 1008. In a function so that the
    parsed headers are not kept in the connection's frame for its whole life.

    A session cookie on a view that authenticates with it (``SessionAuthenticator``) needs an Origin
    trusted by name (``realtime.security.origin_allowed``): browsers send cookies on cross-site
    upgrades, and WebSockets have no same-origin policy, so this check is their CSRF protection.
    """
    headers = parse_headers(scope)
    check = getattr(authenticator, "ambient_credentials", None)  # an authenticator of one's own may lack it
    ambient = bool(check(headers)) if check is not None else False
    if origin_allowed(headers, scope.get("scheme"), ambient=ambient):
        return None
    if ambient:
        logger.info("Refused a WebSocket with a session cookie from origin %r", headers.get("origin"))
        return ORIGIN_REFUSED_WITH_COOKIE
    logger.info("Refused a WebSocket from origin %r", headers.get("origin"))
    return ORIGIN_REFUSED


#: The reasons of the Origin check's 1008.
ORIGIN_REFUSED = "Origin not allowed"
ORIGIN_REFUSED_WITH_COOKIE = "Origin not allowed with a session cookie"


async def _authenticate_ws(ws: WebSocket, view: Any = None) -> Any:
    """The user behind the connection's token, or None (anonymous or refused credentials).

    For the specification's push-only pattern: a refused token counts as none, and is kept in
    ``ws.auth_error`` so that ``_check_ws_permissions`` can name it in the denial's reason.
    """
    authenticator = getattr(view, "authenticator_class", TokenAuthenticator)()
    user, token, refusal = await credentials_of(authenticator.authenticate(ws.headers, ws.query_params))
    keeper = ws.view if ws.view is not None else view  # the connection's credentials are its view's
    keeper.user, keeper.auth_token, keeper.auth_error = user, token, refusal
    return user


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
    refusal = ws.auth_error
    return (Denied.credentials(refusal) if refusal is not None else Denied.permission(denied, user)).reason


def _going_away() -> asyncio.Future[Any] | None:
    """Shutdown has begun: every open WebSocket of a view closes itself with 1001, so that it knows it
    closed (its log line says ``closed_by=server``) and sends nothing after. The server waits on the closes."""
    closes = [
        record.ws.close(CloseCode.GOING_AWAY, "Server shutting down")
        for record in list(live) if record.ws is not None and record.open
    ]
    return asyncio.gather(*closes, return_exceptions=True) if closes else None


lifecycle.on_shutdown(_going_away)


def _cut_short_by(reader: asyncio.Task[Any] | None) -> bool:
    """Whether the cancellation being handled is the reader's alone: the client left a handler
    that does not read (its ``finally`` has run). A shutdown's cancellation is not."""
    if reader is None or not reader.done():
        return False
    task = asyncio.current_task()
    return task is not None and task.uncancel() == 0


def _no_gap_message(missed: int) -> None:
    """A forwarded ``subscribe()`` (no ``gaps=True``) drops silently: no message tells of the gap."""
    return None


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
    #: Whether ``_handle`` reads the client itself. The default flow does, in the connection's own
    #: task. A class that overrides ``_handle`` (the specification's push-only pattern, whose loop
    #: may never read) gets False: a reader task then reads the client beside the handler (into the
    #: inbox ``ws.receive()`` serves) and ends the handler when the client leaves. Such a class may
    #: set it back to True when its ``_handle`` reads the client itself.
    handler_reads: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_handle" in vars(cls) and "handler_reads" not in vars(cls):
            cls.handler_reads = False

    def __init__(self, **initkwargs: Any) -> None:
        for key, value in initkwargs.items():
            setattr(self, key, value)
        if self.encoding not in ENCODINGS:
            raise ValueError(f"{type(self).__name__}.encoding must be one of {ENCODINGS}, not {self.encoding!r}")
        #: The connection's user (None: anonymous) and credentials, kept here once; ``ws.user``,
        #: ``ws.auth_token`` and ``ws.auth_error`` read them.
        self.user: Any = None
        self.auth_token: Any = None
        self.auth_error: AuthenticationFailed | None = None
        self.params: dict[str, Any] = {}
        #: The connection's background tasks; a set only once there is one (most sockets have none).
        self._tasks: set[asyncio.Task[Any]] | tuple[()] = ()
        #: What the admitted connection holds (caps, revocation entry, expiry timer) until it ends.
        self._admission: Admitted | None = None
        #: The inbound throttles, made at the first message: an idle socket keeps none.
        self._throttles: list[Any] | None = None
        self._heartbeat: Beat | None = None
        self._relay: Any = None

    # -- hooks --------------------------------------------------------------------------------

    async def on_connect(self, ws: WebSocket, **params: Any) -> None:
        """Called after ``accept()``, with the path parameters."""

    async def on_receive(self, ws: WebSocket, data: Any) -> None:
        """Called for each message, decoded according to ``encoding``."""

    async def on_disconnect(self, ws: WebSocket, code: int) -> None:
        """Called exactly once when the connection ends, whoever ended it."""

    async def on_recheck(self, ws: WebSocket) -> None:
        """Called when the user's permissions were re-checked on the open connection and still hold.

        A re-check (``realtime.recheck(user)``, a change of the user's groups, a save of the user)
        reloads ``self.user`` and runs ``permission_classes`` again; a refusal closes with 4003 and
        the permission's message, else this hook runs (``TopicSocket`` re-checks its channels here).
        """

    def stream(self, ws: WebSocket, **params: Any) -> AsyncIterator[Any] | None:
        """Override as an async generator to push: each item is sent with the view's encoding.

        It starts after ``on_connect`` and is cancelled when the connection ends; when it
        finishes the connection is closed with 1000. One that only forwards a channel
        (``async for message in channel.subscribe(): yield message``) is served as ``relay = channel``
        is, by the direct delivery path (``realtime.forwarding``).
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
        ws = self.ws = WebSocket(scope, send, receive, view=self, on_accept=self._start_keepalive)
        self.params = ws.path_params
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        open_connections.opened()
        record = track_websocket(self, ws)
        # One read path, ws.receive(), and the handler always runs in the connection's own task.
        # The default flow reads there itself (no reader task, no inbox); a handler that may never
        # read has a reader task beside it for as long as it runs.
        reader: asyncio.Task[Any] | None = None
        try:
            refusal = _origin_refusal(scope, self.authenticator_class())
            if refusal is not None:
                await self._refuse(ws, CloseCode.POLICY_VIOLATION, refusal)
            else:
                if not self.handler_reads:
                    reader = self._spawn(self._read_beside(ws, asyncio.current_task()))
                await self._handle(ws)
                if reader is not None:
                    reader.cancel()
                if ws.client_state is not WebSocketState.DISCONNECTED:
                    await ws.close(CloseCode.NORMAL)
        except asyncio.CancelledError:
            if not _cut_short_by(reader):
                # The server is shutting down (daphne cancels every application on SIGTERM): say so.
                with contextlib.suppress(Exception):
                    await ws.close(CloseCode.GOING_AWAY, "Server shutting down")
                raise
        except Exception:  # the default flow catches its own; this is an overridden _handle's
            logger.exception("Unhandled error in %s", type(self).__name__)
            with contextlib.suppress(Exception):
                await ws.close(CloseCode.INTERNAL_ERROR)
        finally:
            if self._heartbeat is not None:
                self._heartbeat.leave(self)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._stop_relay()
            ws.release_inbound()
            if self._admission is not None:
                self._admission.release()
            open_connections.closed()
            record.close()

    async def _read_beside(self, ws: WebSocket, handler: asyncio.Task[Any] | None) -> None:
        """For a handler that may never read: read the client, and end the handler when it leaves."""
        try:
            await ws.read_into_inbox(64)
        except Exception:
            logger.exception("Reading from the client failed")
            ws._disconnected(CloseCode.INTERNAL_ERROR)  # wakes a handler waiting on the inbox
        if handler is not None:
            handler.cancel()

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
        limit = self.max_message_size if self.max_message_size is not None else setting("MAX_MESSAGE_SIZE")
        try:
            if self._admission is not None:
                self._admission.hold(self._credentials_ended)
            await self.on_connect(ws, **self.params)
            self._start_stream(ws)
            while True:
                message = await ws.receive()
                self.check_throttles(ws)
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
        """The subprotocol, then the admission (realtime.admission). A refusal is accepted then
        closed, so the client sees its code."""
        if self.subprotocol and self.subprotocol not in (self.scope.get("subprotocols") or ()):
            return await self._refuse(ws, CloseCode.POLICY_VIOLATION, f"Subprotocol {self.subprotocol!r} required")
        result = await self.admission(ws)
        if type(result) is Denied:
            if result.before_accept:  # shutting down: 503 and Retry-After, the handshake's own answer
                offered = self.scope.get("subprotocols") or ()
                await ws.deny(result.http_status, result.headers, result.detail, result.close_code, result.reason,
                              self.subprotocol if self.subprotocol in offered else None)
                return False
            return await self._refuse(ws, result.close_code, result.reason)
        return True

    async def admission(self, ws: WebSocket) -> Admitted | Denied:
        """The connection's admission (credentials of the handshake, permissions, caps); when admitted
        the view keeps what it holds until the connection ends. Also run by a transport that drives
        the view without a WebSocket (``realtime.topics.fallback``), which maps a Denied its own way."""
        scope = ws.scope
        credentials = self.authenticator_class().authenticate(parse_headers(scope), parse_query(scope))
        result = await admit(self, ws, credentials, lambda user: websocket_caps(user, scope))
        if type(result) is Admitted:
            self._admission = result
        return result

    async def begin(self, ws: WebSocket) -> None:
        """For a transport driving the view itself: after ``admission`` and ``ws.accept()``, watch the
        credentials (expiry, revocation, re-checks close ``ws``) and run ``on_connect``."""
        self.ws = ws
        if self._admission is not None:
            self._admission.hold(self._credentials_ended)
        await self.on_connect(ws, **self.params)

    async def finish(self, ws: WebSocket, code: int) -> None:
        """For a transport driving the view itself: the connection has ended. ``on_disconnect`` runs,
        the view's tasks end and its admission is released, as when a WebSocket closes."""
        self._cancel_tasks()
        await self._call_on_disconnect(ws, code)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        ws.release_inbound()
        if self._admission is not None:
            self._admission.release()
            self._admission = None

    async def _refuse(self, ws: WebSocket, code: int, reason: str) -> bool:
        offered = self.scope.get("subprotocols") or ()
        await ws.refuse(code, reason, self.subprotocol if self.subprotocol in offered else None)
        return False

    # -- inbound rate limits ------------------------------------------------------------------

    def get_throttles(self) -> list[Any]:
        """New instances of the inbound throttles: ``throttle_classes``, else one MessageRateThrottle."""
        classes = self.throttle_classes if self.throttle_classes is not None else [MessageRateThrottle]
        return [throttle() for throttle in classes]

    def check_throttles(self, ws: WebSocket) -> None:
        """Run before each inbound message is decoded; over a rate, closes with 1008 and the throttle's message."""
        throttles = self._throttles
        if throttles is None:
            throttles = self._throttles = self.get_throttles()
        for throttle in throttles:
            if not throttle.allow_message(ws, self):
                raise WebSocketException(CloseCode.POLICY_VIOLATION, throttle.message)

    # -- credentials that end or change on open connections -----------------------------------

    def _credentials_ended(self, code: str) -> None:
        """The token expired, or the user's sessions were revoked: close (4003; 4001 with STRICT_TOKENS).
        A re-check found a permission that now refuses: close as its refusal at connect would (4003)."""
        denied = self._admission.denied if self._admission is not None else None
        if code == DENIED and denied is not None:
            self._spawn(self.ws.close(denied.close_code, denied.reason))
            return
        reason = "session_revoked" if code == REVOKED else "token_expired: refresh the token and reconnect"
        self._spawn(self.ws.close(refused_credentials_code(), reason))

    def _accept_token(self, user: Any, token: Any) -> None:
        """A token presented in-band. A fresh one of the connection's user renews its expiry; on an
        anonymous connection (TopicSocket's ``connect``) the user signs in: counted under the per-user
        cap (over it: 1008), registered for revocation, its expiry watched."""
        admission = self._admission
        if admission is None:
            raise RuntimeError(f"{type(self).__name__} took a token in-band without having been admitted (_admit)")
        if self.user is None:
            if not admission.sign_in(user, token, [user_cap(user)]):
                raise WebSocketException(CloseCode.POLICY_VIOLATION, "Too many connections")
            self.user, self.auth_error = user, None
        else:
            admission.renew(token)
        self.auth_token = token

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
        if self.user is None:
            reason = "not_authenticated: the connection has no user to refresh; reconnect with the token"
            raise WebSocketException(refused_credentials_code(), reason)
        if user.pk != self.user.pk:
            raise WebSocketException(refused_credentials_code(), "user_mismatch: the token belongs to another user")
        self._accept_token(user, validated)
        await ws.send_json({"type": self.refresh_message_type, "ok": True, "exp": validated.get("exp")})

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
            # The default relay_message is the identity: skip the call on the hot path.
            transform = None if type(self).relay_message is WebSocketView.relay_message else self.relay_message
            self._start_relay(ws, self.relay, transform, self.relay_gap)
            return
        # A stream() that only forwards a channel (realtime.forwarding) is served as a relay of it:
        # the same messages in the same order, dropped silently as its subscription would drop them.
        channel = forwarded_channel(self, MESSAGE, WebSocketView.stream)
        if channel is not None:
            self._start_relay(ws, channel, None, _no_gap_message)
            return
        items = self.stream(ws, **self.params)
        if items is not None:
            self._spawn(self._push(ws, items))

    def _start_relay(self, ws: WebSocket, channel: Any, transform: Any, gap: Any) -> None:
        from . import servers
        from .relay import Relay

        send = ws._server_send
        writer = servers.websocket_writer(send)
        # Unsubscribed as soon as the connection ends (before its tasks are cancelled), and again
        # on exit in case it never started: a relay must not spawn a task for a closed socket.
        self._relay = Relay(
            ws, writer, channel, self.encoding, transform=transform, gap=gap, spawn=self._spawn,
            name=type(self).__name__,
        )

    def _stop_relay(self) -> None:
        if self._relay is not None:
            self._relay.close()

    async def _push(self, ws: WebSocket, items: AsyncIterator[Any]) -> None:
        from . import servers
        from .relay import ENCODERS

        send = {"json": ws.send_json, "text": ws.send_text, "bytes": ws.send_bytes}[self.encoding]
        # Each item's frame is written straight to the transport while it has room (a published
        # message's frame is built once and shared, realtime.frames), as the relay writes it; else
        # the ASGI send, which waits for the client under the slow-consumer policy. One task sends
        # the items in turn, so their order is kept either way.
        writer = servers.websocket_writer(ws._server_send)
        encode = ENCODERS[self.encoding]
        connected = WebSocketState.CONNECTED
        try:
            async for item in items:
                if writer is not None and ws.client_state is connected and writer.ready():
                    writer.write(encode(item, None))
                    ws.sent += 1
                    ws.direct += 1
                    if ws.latency is not None and type(item) is SharedMessage and item.published_at is not None:
                        ws.latency.observe(time.perf_counter() - item.published_at)
                    continue
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
