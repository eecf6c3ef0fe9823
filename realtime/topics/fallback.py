"""The fallback binding of protocol v1: SSE downstream, HTTP POST upstream, for clients whose
WebSocket upgrade is refused (a proxy that strips ``Upgrade``) or times out.

It is a second driver of the same :class:`~realtime.topics.socket.TopicSocket`: a
``GET`` opens a *session*, one TopicSocket instance admitted as a WebSocket would be
(``WebSocketView.admission``: the stream's credentials, the socket's permissions, the per-user and
per-address caps) and fed frames by the POSTs; every frame the socket sends goes down the stream as
one SSE event. The protocol itself (``realtime.topics.protocol``) is not copied: replies, resume,
presence, refresh and the rate limits are the socket's own. See docs/protocol.md, "Fallback binding".

- ``GET <path>``: ``event: session`` first, ``{"session": "<id>", "v": 1}``; then one event per
  frame (``data:`` is the frame's JSON); ``event: close`` ``{"code", "reason"}`` when the socket
  closes (the stream ends after it). The id is 32 random bytes (``secrets``), bound to the stream:
  when the stream ends the session ends with it (the socket's subscriptions and presence are left).
- ``POST <path>`` with ``X-Realtime-Session: <id>``: a JSON array of frames, answered ``202`` once they are carried out;
  their replies come down the stream, in order. The POST's token (``Authorization: Bearer``, or
  ``?token=``) must be the session user's: 404 ``unknown_session``, 403 ``session_mismatch``
  (another user's session, or a token on an anonymous one), 401 for a refused token, 413 over the
  socket's message size, 400 for a body that is not an array of at most ``MAX_BATCH`` frames.
- A GET or POST whose ``Origin`` the WebSocket's origin check would refuse is answered 403
  ``origin_not_allowed`` (a same-origin GET sends no Origin).

Sessions live in the process that holds their stream: behind several processes, POSTs must reach
that process (the shipped nginx.conf hashes the fallback's requests by client address).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from ..admission import Denied, credentials_of
from ..closecodes import CloseCode, WebSocketException
from ..conf import setting
from ..connection import WebSocket, WebSocketDisconnect, WebSocketState, parse_headers, parse_query
from ..encoding import loads
from ..ops.connections import sse_user
from ..security import origin_allowed
from ..sse import sse_error, sse_response

logger = logging.getLogger("realtime.topics.fallback")

#: The request header a POST names its session in (a header, so the id is in no access log).
SESSION_HEADER = "X-Realtime-Session"
#: Frames one POST may carry.
MAX_BATCH = 32
#: Frames queued for a stream that does not read before the socket's sends wait.
QUEUE = 256

_CLOSED = object()


class Session:
    """One fallback connection: its socket, its ``ws`` (sends go to the stream's queue), its id."""

    def __init__(self, socket: Any, scope: dict[str, Any]) -> None:
        self.id = secrets.token_urlsafe(32)
        self.socket = socket
        self.queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE)
        self.ws = WebSocket(scope, self._send, view=socket)
        self.close_frame: dict[str, Any] = {"code": CloseCode.NORMAL, "reason": ""}
        self.ended: asyncio.Task[None] | None = None
        #: Serialises POSTs: frames are carried out in the order their POSTs arrived.
        self.lock = asyncio.Lock()

    async def _send(self, message: dict[str, Any]) -> None:
        """The ASGI send behind ``ws``: frames go down the stream; a close ends it."""
        kind = message["type"]
        if kind == "websocket.send":
            text = message.get("text")
            if text is None:
                text = message["bytes"].decode("utf-8")
            await self.queue.put(text)
        elif kind == "websocket.close":
            self.close_frame = {"code": message.get("code", CloseCode.NORMAL), "reason": message.get("reason") or ""}
            try:
                self.queue.put_nowait(_CLOSED)
            except asyncio.QueueFull:  # a stream that does not read: the close must still reach it
                self.queue.get_nowait()
                self.queue.put_nowait(_CLOSED)

    def end(self) -> asyncio.Task[None]:
        """The stream has ended (however): forget the session, then the socket leaves what it joined."""
        if self.ended is None:
            sessions.pop(self.id, None)
            code = self.ws.close_code or CloseCode.GOING_AWAY
            self.ws.close_code = code
            self.ws.client_state = WebSocketState.DISCONNECTED  # every later send raises WebSocketDisconnect
            # A send waiting for room in the queue of a stream that stopped reading (a POST's reply,
            # holding the socket's lock) is let through, or the socket could never leave its channels.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.ended = asyncio.get_running_loop().create_task(self.socket.finish(self.ws, code))
        return self.ended


#: Open sessions of this process, by id.
sessions: dict[str, Session] = {}


def fallback_view(socket_class: type) -> Any:
    """The Django view of ``socket_class``'s fallback: GET opens a session, POST feeds it."""

    @csrf_exempt  # a POST carries the session id and the token, never rides on a cookie
    async def view(request: HttpRequest, **params: Any) -> HttpResponse:
        if not _origin_ok(request, socket_class):
            return _problem(403, "origin_not_allowed", "Origin not allowed")
        if request.method == "GET":
            return await _open(socket_class, request, params)
        if request.method == "POST":
            return await _post(request)
        response = HttpResponse(status=405)
        response["Allow"] = "GET, POST"
        return response

    view.socket_class = socket_class  # type: ignore[attr-defined]
    view.__name__ = f"{socket_class.__name__}Fallback"
    view.__qualname__ = view.__name__
    view.__module__ = socket_class.__module__
    return view


def _origin_ok(request: HttpRequest, socket_class: type) -> bool:
    """The WebSocket's Origin rule for a request that sends an Origin (a same-origin GET sends none).
    With credentials the browser attaches by itself (the session cookie of a ``SessionAuthenticator``
    socket) a POST must send a trusted Origin, as a cookie's WebSocket handshake must."""
    headers = parse_headers(request.scope)
    check = getattr(socket_class.authenticator_class(), "ambient_credentials", None)
    ambient = bool(check(headers)) if check is not None else False
    if "origin" not in headers:
        return not (ambient and request.method == "POST")
    return origin_allowed(headers, request.scope.get("scheme"), ambient=ambient)


async def _open(socket_class: type, request: HttpRequest, params: dict[str, Any]) -> HttpResponse:
    socket = socket_class()
    socket.scope = request.scope
    socket.params = params
    session = Session(socket, request.scope)
    admitted = await socket.admission(session.ws)
    if type(admitted) is Denied:
        return sse_error(admitted.http_status, admitted.error_code, admitted.detail, admitted.headers)
    sse_user(socket.user)  # the ops log names the stream's user, as an SSEView's
    await session.ws.accept()
    sessions[session.id] = session
    try:
        await socket.begin(session.ws)
    except BaseException:
        await session.end()
        raise

    loop = asyncio.get_running_loop()

    def release() -> None:
        # Django closes a response in a worker thread (sync_to_async(response.close)): end it in the loop.
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is exiting
            loop.call_soon_threadsafe(session.end)

    return sse_response(_events(session), headers=getattr(socket_class, "fallback_headers", None), release=release)


async def _events(session: Session) -> AsyncIterator[dict[str, Any]]:
    try:
        yield {"event": "session", "data": {"session": session.id, "v": 1}}
        while True:
            text = await session.queue.get()
            if text is _CLOSED:
                yield {"event": "close", "data": session.close_frame}
                return
            yield {"data": text}
    finally:
        await asyncio.shield(session.end())


def _problem(status: int, code: str, detail: str) -> HttpResponse:
    from ..encoding import dumps

    return HttpResponse(dumps({"code": code, "detail": detail}), status=status, content_type="application/json")


async def _post(request: HttpRequest) -> HttpResponse:
    session = sessions.get(request.headers.get(SESSION_HEADER) or "")
    if session is None:
        return _problem(404, "unknown_session", "No open session has this id (its stream has ended?): open a new one")
    socket = session.socket
    scope = request.scope
    found = socket.authenticator_class().authenticate(parse_headers(scope), parse_query(scope))
    user, _, refusal = await credentials_of(found)
    if refusal is not None:
        return _problem(401, refusal.code, refusal.detail)
    owner = getattr(socket.user, "pk", None)
    if (getattr(user, "pk", None) if user is not None else None) != owner:
        return _problem(403, "session_mismatch", "This session belongs to another user")
    limit = socket.max_message_size if socket.max_message_size is not None else setting("MAX_MESSAGE_SIZE")
    declared = request.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return _problem(413, "message_too_big", f"A POST carries at most {limit} bytes")
    body = request.body
    if len(body) > limit:
        return _problem(413, "message_too_big", f"A POST carries at most {limit} bytes")
    try:
        frames = loads(body)
    except (ValueError, RecursionError):
        return _problem(400, "bad_request", "The body is a JSON array of frames")
    if type(frames) is not list or not 0 < len(frames) <= MAX_BATCH:
        return _problem(400, "bad_request", f"The body is a JSON array of 1 to {MAX_BATCH} frames")
    async with session.lock:
        for frame in frames:
            if session.ended is not None:
                return _problem(404, "unknown_session", "The session ended")
            try:
                await socket.on_receive(session.ws, frame)
            except WebSocketDisconnect:
                return _problem(404, "unknown_session", "The session ended")
            except WebSocketException as error:  # over the rate: the error reply went down, then close
                await session.ws.close(error.code, error.reason)
                return _problem(429 if error.code == CloseCode.POLICY_VIOLATION else 400, "closed", error.reason)
    return HttpResponse(status=202)
