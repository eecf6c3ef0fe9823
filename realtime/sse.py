"""SSEView and sse_response: Server-Sent Events as Django async views.

SSE is plain HTTP, so these are ordinary Django views and pass through the project's whole
middleware stack. The stream is an *async* generator (Django reads a sync iterator whole before
sending anything). Heartbeats and events go through one queue, so a ``: ping`` never lands inside an
event's bytes. When the client leaves, Django cancels the response; the generator sees
``CancelledError`` and its ``finally`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views import View

from . import lifecycle
from .admission import Admitted, Denied, admit, shutdown_denial, sse_caps
from .auth import AuthenticationFailed, TokenAuthenticator
from .encoding import SharedMessage
from .forwarding import DATA, forwarded_channel
from .memory import open_connections
from .ops.connections import sse_user, track_sse
from .ops.stats import stats
from .permissions import is_authenticated
from .pubsub.subscription import Gap
from .sealed_ids import IdSeal
from .sessions import SessionCredentials, revocation_key
from .sse_encoder import FAILED, OPENED, PING, SHUTDOWN, data_frame, encode_event, encode_item
from .threads import release_request_thread, shared_thread_context

logger = logging.getLogger("realtime.sse")

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
}

_END = object()


class _Idle:
    """Whether the response body waits for its next frame, with nothing queued: a frame written
    straight to the response then keeps the stream's order."""

    __slots__ = ("waiting",)

    def __init__(self) -> None:
        self.waiting = False


async def _frames(
    events: AsyncIterator[Any], ping_interval: float | None, writer_of: Any = None
) -> AsyncIterator[bytes]:
    """Encoded events, with a ``: ping`` whenever ``ping_interval`` seconds pass without one.

    The first frame is an ``OPENED`` comment, sent at once: daphne writes the status line and
    headers only with the first body bytes, so without it a quiet stream would look unanswered
    (no ``EventSource.onopen``) until its first event or ping. Then the request's worker thread is
    released (see ``realtime.threads``) and the generator runs in a task of its own, so a ping
    never interrupts it and its thread-sensitive calls go to the process-wide thread.

    An exception in the generator is logged with its traceback and ends the stream with
    ``event: error`` (``internal_error``): the client reconnects, as after a WebSocket's 1011. It
    never reaches Django, which would take a ``TypeError`` for a sync iterator and hide it.

    ``writer_of()``, once the headers are out, gives the response's direct writer (``realtime.servers``)
    or None: while the body waits with nothing queued and the transport has room, the generator's
    task writes each frame itself (a published message's frame built once, ``data_frame``), with no
    hop through the queue, the body and Django's send. Otherwise frames take that path, which waits
    for the client under the slow-consumer policy.
    """
    yield OPENED
    release_request_thread()
    queue: asyncio.Queue[Any] = asyncio.Queue(16)
    writer = writer_of() if writer_of is not None else None
    idle = _Idle()

    async def pump() -> None:
        try:
            async for item in events:
                frame = _encode(item)
                if writer is not None and idle.waiting and queue.empty() and writer.ready():
                    writer.write(frame)
                    record.sent += 1
                    continue
                await queue.put(frame)
        except Exception:  # handed to the response task, which logs it and ends the stream
            logger.exception("SSE stream failed: the client gets event: error (internal_error)")
            await queue.put(FAILED)
            return
        finally:
            await _aclose(events)
        await queue.put(_END)

    def end_for_shutdown() -> None:
        while queue.full():  # the stream ends now; what is queued would never be read
            queue.get_nowait()
        queue.put_nowait(SHUTDOWN)

    record = track_sse()  # before the pump's context is copied: its subscriptions are the stream's
    producer = asyncio.get_running_loop().create_task(pump(), context=shared_thread_context())
    forget_shutdown = lifecycle.on_shutdown(end_for_shutdown)
    open_connections.opened()
    interval = ping_interval if ping_interval and ping_interval > 0 else None
    try:
        while True:
            if queue.empty():  # only a wait needs a timer: none when a frame is ready
                idle.waiting = True
                sent = record.sent
                try:
                    async with asyncio.timeout(interval):
                        frame = await queue.get()
                except TimeoutError:
                    idle.waiting = False
                    if record.sent == sent:  # no frame went out meanwhile, not even directly
                        yield PING
                    continue
                idle.waiting = False
            else:
                frame = queue.get_nowait()
            if frame is _END:
                return
            record.sent += 1
            yield frame
            if frame is SHUTDOWN or frame is FAILED:
                return
    finally:
        record.close()
        open_connections.closed()
        forget_shutdown()
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer


def _encode(item: Any) -> bytes:
    # A {"data": message} event of a published message is the same bytes for every subscriber:
    # encoded once per publish, cached on the shared message.
    if type(item) is dict and len(item) == 1:
        data = item.get("data")
        if type(data) is SharedMessage:
            return data_frame(data)
    return encode_item(item)


async def _aclose(events: Any) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


async def _guarded(events: AsyncIterator[Any], admitted: Admitted) -> AsyncIterator[Any]:
    """An authenticated stream: ends with ``event: error`` when its token expires, its user's
    sessions are revoked (logout, deactivation) or a re-check finds that a permission now refuses
    (the refusal's code and detail, as at connect), and releases what its admission holds however it ends.

    Each wait for the next event races that end; nothing waits across a ``yield``.
    """
    ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    admitted.hold(lambda code: ended.done() or ended.set_result(code))
    iterator = aiter(events)
    step: asyncio.Future[Any] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait((step, ended), return_when=asyncio.FIRST_COMPLETED)
            if step in done:
                try:
                    item = step.result()
                except StopAsyncIteration:
                    return
                step = None
                yield item
                continue
            yield {"event": "error", "data": admitted.error_data(ended.result())}
            return
    finally:
        if step is not None and not step.done():
            step.cancel()
            with contextlib.suppress(BaseException):
                await step
        admitted.release()
        await _aclose(events)


def sse_response(
    events: AsyncIterator[Any],
    ping_interval: float = 15,
    headers: Mapping[str, str] | None = None,
    status: int = 200,
    release: Any = None,
) -> HttpResponse:
    """A streaming ``text/event-stream`` response over an async iterator of event dicts.

    While the server shuts down it is the admission's refusal instead (503 with ``Retry-After``),
    as for an SSEView. ``release()``, when given, runs once Django closes the response, however far
    the body got (also when the client left before its first event, where the generator's
    ``finally`` never runs).
    """
    if not hasattr(events, "__aiter__"):
        raise TypeError(
            "sse_response() needs an async iterator (an 'async def' generator): Django reads a "
            "sync iterator whole before sending anything"
        )
    if lifecycle.shutting_down():
        denied = shutdown_denial()
        return sse_error(denied.http_status, denied.error_code, denied.detail, denied.headers)
    return _event_stream(_frames(events, ping_interval), headers, status, release)


def _event_stream(
    body: AsyncIterator[bytes], headers: Mapping[str, str] | None = None, status: int = 200, release: Any = None
) -> StreamingHttpResponse:
    """The ``text/event-stream`` response over ``body``; ``release()`` runs when Django closes it, and
    the body is closed then too (see :class:`_Releasing`)."""
    response = StreamingHttpResponse(_Releasing(body, release), status=status)
    for name, value in {**SSE_HEADERS, **(headers or {})}.items():
        response[name] = value
    return response


def sse_error(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> HttpResponse:
    """A refusal that EventSource understands: a non-200 status (it stops retrying) with one
    ``event: error`` frame whose data is JSON ``{"code", "detail"}`` for fetch clients."""
    stats.refuse("sse", status)
    body = encode_event({"code": code, "detail": detail}, event="error")
    response = HttpResponse(body.encode("utf-8"), status=status)
    for name, value in {**SSE_HEADERS, **(headers or {})}.items():
        response[name] = value
    return response


class SSEView(View):
    """Base class for SSE endpoints: override ``stream(request, **params)`` as an async generator."""

    #: Checked before streaming; a denial answers 403 (401 without valid credentials). A refused token
    #: counts as none (served as anonymous where allowed; else 401 with the refusal's code), unless
    #: ``REALTIME["STRICT_TOKENS"]``, where it answers 401 on every endpoint.
    permission_classes: ClassVar[list[Any]] = []
    #: Seconds between ``: ping`` comments; 0 disables them.
    ping_interval: ClassVar[float] = 15
    #: Extra response headers.
    headers: ClassVar[dict[str, str]] = {}
    #: How tokens are found and validated.
    authenticator_class: ClassVar[type[TokenAuthenticator]] = TokenAuthenticator
    #: The client's user (None: anonymous) and credentials, set by the admission (realtime.admission)
    #: before the permissions run. ``auth_error`` is a refused token's refusal, when it counted as none.
    user: Any = None
    auth_token: Any = None
    auth_error: AuthenticationFailed | None = None

    #: A Channel streamed to every client by the direct delivery path (``realtime.sse_relay``): the
    #: same events as ``follow(relay, event=relay_event)``, without a task per stream per message.
    relay: ClassVar[Any] = None
    #: The ``event:`` name of relayed messages (None: the default ``message`` event).
    relay_event: ClassVar[str | None] = None
    #: Whether ``follow()`` and relays send sealed ids (``realtime.sealed_ids``) instead of the
    #: channel's history ids, which order everyone's messages. None: sealed when the stream filters
    #: the channel (a ``predicate``, a ``relay_message`` of the view's own); False: the view shows
    #: every message to everyone (a filter by topic, not by user) and keeps the plain ids.
    sealed_ids: ClassVar[bool | None] = None

    http_method_names = ["get", "options"]

    def relay_message(self, message: Any) -> Any:
        """For ``relay`` views: the message to send for a published one, or None to skip it.

        Called in the publisher's turn for every stream: keep it cheap; return the message itself
        to keep the frame shared by every stream.
        """
        return message

    def relay_transform(self) -> Any:
        """``relay_message`` when overridden, else None: the identity costs nothing on the hot path."""
        return None if type(self).relay_message is SSEView.relay_message else self.relay_message

    def id_seal(self, channel: Any, filtered: bool) -> IdSeal | None:
        """The seal of this stream's ids on ``channel``, or None to send its history ids.

        A sealed id opens only on the same channel, path and user: another user's, or another
        stream's, is answered as a malformed id (``event: reset``).
        """
        if not (filtered if self.sealed_ids is None else self.sealed_ids):
            return None
        user = self.user.pk if is_authenticated(self.user) else ""
        path = self.request.path if getattr(self, "request", None) is not None else ""
        return IdSeal(f"{channel.name}\n{path}\n{user}")

    async def stream(self, request: HttpRequest, **params: Any) -> AsyncIterator[dict[str, Any]]:
        """Yield dicts with ``data`` and optional ``event``, ``id`` and ``retry``.

        One that only forwards a channel (``async for message in channel.subscribe(): yield {"data":
        message}``) is served by the direct delivery path, with the same frames (``realtime.forwarding``).
        """
        raise NotImplementedError(f"{type(self).__name__} must define 'async def stream(self, request, **params)'")
        yield  # pragma: no cover - makes this an async generator

    async def get(self, request: HttpRequest, **params: Any) -> HttpResponse:
        self.params = params
        self.last_event_id = request.headers.get("Last-Event-ID") or request.GET.get("lastEventId") or None
        admitted = await admit(self, request, self._credentials(request), sse_caps, anonymous=_anonymous)
        if type(admitted) is Denied:
            return sse_error(admitted.http_status, admitted.error_code, admitted.detail, admitted.headers)
        sse_user(self.user)
        if self.relay is not None:
            return await self._relay_response(request, admitted, self.relay)
        # A stream() that only forwards a channel as {"data": message} (realtime.forwarding) is served
        # by the direct delivery path too, with the generator's frames: no ids, no resume, no resets.
        channel = forwarded_channel(self, DATA, SSEView.stream)
        if channel is not None:
            return await self._relay_response(request, admitted, channel, plain=True)
        events = self.stream(request, **params)
        if is_authenticated(self.user):
            events = _guarded(events, admitted)
        body = _frames(events, self.ping_interval, lambda: _direct_writer(request, response, body))
        response = _event_stream(body, self.headers, release=admitted.release)
        return response

    async def _credentials(self, request: HttpRequest) -> tuple[Any, Any] | None:
        """``(user, token)`` for the admission, from the ``authenticate`` hook; None for no one."""
        user = await self.authenticate(request)
        return (user, getattr(self, "auth_token", None)) if user is not None else None

    async def _relay_response(
        self, request: HttpRequest, admitted: Admitted, channel: Any, plain: bool = False
    ) -> HttpResponse:
        from .sse_relay import relay_body

        body = relay_body(
            self, channel, lambda: _direct_writer(request, response, body), self.ping_interval, admitted, plain=plain
        )
        response = _event_stream(body, self.headers, release=admitted.release)
        return response

    async def follow(
        self, channel: Any, event: str | None = None, predicate: Any = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Events of ``channel`` as SSE dicts with ids, resuming after ``Last-Event-ID``.

        On a reconnect the messages published since the client's last id are replayed first,
        then live ones follow with no duplicate and no gap. If history no longer reaches back
        that far (or the id is malformed), one ``event: reset`` comes first: the client should
        refetch its state. ``predicate(message)`` filters (for example, one user's events): then the
        ids are sealed (``sealed_ids``), so they say nothing of the messages filtered out, and a
        ``reset`` after drops says ``missed: null`` (the count would include them).
        """
        resume = self.last_event_id if channel.history else None
        seal = self.id_seal(channel, predicate is not None)
        last_id = resume if seal is None or resume is None else (seal.open(resume) or "")
        subscription = channel.subscribe(last_id=last_id, gaps=True, with_ids=True)
        try:
            async for item in subscription:
                if isinstance(item, Gap):
                    missed = item.missed if seal is None else None
                    yield {"event": "reset", "data": {"missed": missed, "last_id": resume}}
                    continue
                message_id, message = item
                if predicate is not None and not predicate(message):
                    continue
                frame = {"data": message if isinstance(message, (str, dict, list)) else str(message)}
                if event is not None:
                    frame["event"] = event
                if message_id is not None:
                    frame["id"] = message_id if seal is None else seal.seal(message_id)
                yield frame
        finally:
            subscription.close()

    async def authenticate(self, request: HttpRequest) -> Any:
        """The JWT's user if a token was presented, else the session's logged-in user, else None."""
        query = {key: request.GET.get(key) for key in request.GET}
        headers = {key.lower(): value for key, value in request.headers.items()}
        result = await self.authenticator_class().authenticate(headers, query)
        if result is not None:
            user, self.auth_token = result
            return user
        auser = getattr(request, "auser", None)
        if auser is not None:
            user = await auser()
            if is_authenticated(user):
                key = getattr(getattr(request, "session", None), "session_key", None)
                if key:  # the session's logout ends the stream, as its sockets are closed
                    self.auth_token = SessionCredentials(session=revocation_key(key))
                return user
        return None


def _direct_writer(request: HttpRequest, response: HttpResponse, body: AsyncIterator[bytes]) -> Any:
    """The writer of SSE frames straight to ``response`` (``realtime.servers``), or None.

    Only while the body reaches the client as it is yielded: a middleware that re-encodes the stream
    (GZipMiddleware) gets every frame through its iterator.
    """
    from . import servers

    if response.has_header("Content-Encoding") or getattr(response, "_iterator", None) is not body:
        return None
    send = request.scope.get("realtime.server_send") if hasattr(request, "scope") else None
    return servers.response_writer(send)


class _Releasing:
    """A response body with a ``close()``, which Django adds to the response's closers.

    It frees a stream's caps however far its body got: a client that leaves before the body passes
    its first frame closes an async generator that never reached its ``try``, so its ``finally``
    never runs, but Django closes every response it sent (a release after the body's own is a no-op).
    ``aiter()`` of it is the body itself, so Django iterates the body with no layer between.

    It closes the body too: when Django's request task is cancelled while it sends a frame (a
    client given up on as a slow consumer: ``realtime.flow``), the body is left suspended at its
    ``yield``, and nothing else would close it before the garbage collector found it (its queue
    stayed subscribed to the channel for as long: seconds, or more on an idle process).
    """

    __slots__ = ("iterable", "loop", "release")

    def __init__(self, iterable: AsyncIterator[bytes], release: Any) -> None:
        self.iterable = iterable
        self.release = release
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None

    def close(self) -> None:
        """Django's closer (called from a worker thread): release, and close the body on its loop."""
        if self.release is not None:
            self.release()
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_close_body, self.iterable)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return aiter(self.iterable)


#: The closes of bodies under way (asyncio keeps only weak references to tasks).
_closing: set[asyncio.Task[None]] = set()


def _close_body(body: Any) -> None:
    aclose = getattr(body, "aclose", None)
    if aclose is None:
        return
    task = asyncio.ensure_future(_aclose_quietly(aclose))
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def _aclose_quietly(aclose: Any) -> None:
    try:
        await aclose()
    except RuntimeError:  # still being iterated: whoever iterates it ends it
        pass


def _anonymous() -> Any:
    from django.contrib.auth.models import AnonymousUser

    return AnonymousUser()

