"""One admission for every connection, as DRF's ``APIView.initial()`` is one for every request.

:func:`admit` runs, in order:

1. **credentials**: the view's authenticator (SSE: ``SSEView.authenticate``, which also accepts a
   Django session). A refused token is refused at once under ``REALTIME["STRICT_TOKENS"]``;
   otherwise it counts as no token, as in the specification: the client goes on as anonymous and
   the refusal is kept, to be named if a permission then denies;
2. **permissions**: ``first_denial(get_permissions(view.permission_classes))``, once;
3. **connection caps**: the counters of ``realtime.security`` (a WebSocket: per user and per client
   address; an SSE stream: per user).

Before the first step and again after the last await (so that nothing is admitted once shutdown has
begun, and an accept follows the last check with no suspension between them), a server shutting
down refuses every connection: :func:`shutdown_denial`, HTTP 503 with ``Retry-After``
(``REALTIME["SHUTDOWN_RETRY_AFTER"]``), which a WebSocket gets as its handshake's answer.

It returns :class:`Admitted` or :class:`Denied`. ``Denied`` is transport-neutral: it carries the
WebSocket close code and reason and the HTTP status, error code, detail and headers, and each edge
maps it (a WebSocket is accepted, then closed with the code so that the client sees it; SSE answers
``sse_error``). An ``Admitted`` connection holds its places under the caps and, once it is open
(:meth:`Admitted.hold`), its entry in the revocation registry and its token's expiry timer;
:meth:`Admitted.release` undoes all of it, once.

The same admission runs again while the connection is open when the user's permissions may have
changed (``realtime.recheck``, a group change; see ``realtime.revocation``): the user is reloaded,
step 2 runs again with it, and a refusal ends the connection (``end(DENIED)``) as the refusal at
connect time would have (WebSocket 4003 with the permission's message; SSE ``event: error`` with
its code). When the view's permissions still hold, its ``on_recheck`` hook runs (``TopicSocket``
re-checks each subscription's topic there).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .auth import AuthenticationFailed
from .closecodes import CloseCode, refused_credentials_code
from .conf import setting
from .lifecycle import shutting_down
from .permissions import first_denial, get_permissions, is_authenticated
from .revocation import FreshUser, clean_context, revocations
from .security import ConnectionCounter, sse_users, websocket_addresses, websocket_users
from .sessions import SessionCredentials

logger = logging.getLogger("realtime.admission")

#: One cap: the counter, the key counted (a user id, a client address) and the limit (None: none).
Cap = tuple[ConnectionCounter, object, int | None]

#: Why an open connection ended: the codes ``Admitted.hold``'s callback receives. DENIED: a re-check
#: found that a permission now refuses (``Admitted.denied`` says which, as a :class:`Denied`).
REVOKED = "session_revoked"
EXPIRED = "token_expired"
DENIED = "permission_denied"

BEARER = {"WWW-Authenticate": 'Bearer realm="api"'}


@dataclass(frozen=True, slots=True)
class Denied:
    """A refused connection, as each transport tells its client."""

    #: WebSocket: the close code and reason (the handshake is accepted first, so the client sees them).
    close_code: int
    reason: str
    #: SSE: the status and the ``event: error`` frame's ``code`` and ``detail``, and extra headers.
    http_status: int
    error_code: str
    detail: str
    headers: Mapping[str, str] | None = None
    #: WebSocket: answer the handshake with ``http_status`` and ``headers`` instead of accepting and
    #: closing: the client is told to come back later, not that its request was wrong.
    before_accept: bool = False

    @classmethod
    def credentials(cls, error: AuthenticationFailed) -> Denied:
        """A refused token: 4003 (4001 with STRICT_TOKENS) ``"<code>: <detail>"``; HTTP 401, ``WWW-Authenticate``."""
        return cls(refused_credentials_code(), error.close_reason(), 401, error.code, error.detail, BEARER)

    @classmethod
    def permission(cls, permission: Any, user: Any) -> Denied:
        """A permission that refuses: 4003 with its message; HTTP 403 (401 for an anonymous client) with its code."""
        message = str(getattr(permission, "message", "Permission denied"))
        status = 403 if is_authenticated(user) else 401
        return cls(CloseCode.FORBIDDEN, message, status, getattr(permission, "code", "permission_denied"), message)


#: Over a connection cap: WebSocket 1008, SSE 429.
TOO_MANY = Denied(
    CloseCode.POLICY_VIOLATION, "Too many connections",
    429, "too_many_streams", "Too many concurrent streams for this user",
)


def shutdown_denial() -> Denied:
    """A connection arriving while the server shuts down: HTTP 503 with ``Retry-After`` (a WebSocket's
    handshake answer where the server can send one, else accepted and closed with 1001)."""
    retry_after = str(int(setting("SHUTDOWN_RETRY_AFTER")))
    return Denied(
        CloseCode.GOING_AWAY, "Server shutting down", 503, "shutting_down",
        f"The server is shutting down; retry in {retry_after} s", {"Retry-After": retry_after}, before_accept=True,
    )


class Admitted:
    """What an admitted connection holds until :meth:`release`.

    Its places under the caps are taken by :func:`admit`; its entry in the revocation registry and its
    token's expiry timer start with :meth:`hold`, once the connection is open. One small object per
    connection, not a callable per cap (idle sockets are many).
    """

    __slots__ = (
        "_again", "_caps", "_end", "_exp", "_expiry", "_loop", "_recheck", "_request", "_session", "_unregister",
        "_user_pk", "_view", "denied",
    )

    def __init__(self, user: Any = None, token: Any = None, view: Any = None, request: Any = None) -> None:
        self._caps: tuple[tuple[ConnectionCounter, object], ...] = ()
        self._user_pk = getattr(user, "pk", None) if user is not None else None
        self._exp: Any = token.get("exp") if token is not None else None
        #: A session's revocation key (``realtime.sessions``): its logout closes the connection too.
        self._session: str | None = token.get("session") if isinstance(token, SessionCredentials) else None
        #: Set by hold(): called on the connection's loop with REVOKED, EXPIRED or DENIED.
        self._end: Callable[[str], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unregister: Callable[[], None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        #: What a re-check runs the permissions on (None: the connection is never re-checked).
        self._view, self._request = view, request
        #: The running re-check, and the next one asked for while it runs.
        self._recheck: asyncio.Task[None] | None = None
        self._again: FreshUser | None = None
        #: The refusal a re-check found, before ``end(DENIED)``.
        self.denied: Denied | None = None

    def take(self, caps: Iterable[Cap]) -> bool:
        """Count the connection under each cap; False at the first that is full (release() frees the rest)."""
        for counter, key, limit in caps:
            if not counter.acquire(key, limit):
                return False
            self._caps += ((counter, key),)
        return True

    def hold(self, end: Callable[[str], None]) -> None:
        """The connection is open: register it for revocation (an authenticated user) and watch its
        token's expiry (``EXPIRE_WITH_TOKEN``). ``end(REVOKED)`` or ``end(EXPIRED)`` is called on this
        loop when one comes, until release()."""
        self._end = end
        self._loop = asyncio.get_running_loop()
        self._register()
        self._watch()

    def sign_in(self, user: Any, token: Any, caps: Iterable[Cap]) -> bool:
        """An anonymous connection authenticated in-band (TopicSocket's ``connect``): counted under
        ``caps`` (False, nothing registered, when one is full), registered for revocation, its expiry watched."""
        if not self.take(caps):
            return False
        self._user_pk = user.pk
        self._register()
        self.renew(token)
        return True

    def renew(self, token: Any) -> None:
        """A fresh token of the same user (an in-band refresh): its expiry replaces the old one's."""
        self._exp = token.get("exp") if token is not None else None
        self._watch()

    def release(self) -> None:
        """Free the caps, leave the revocation registry, stop the expiry timer. A second call does nothing."""
        caps, self._caps = self._caps, ()
        for counter, key in caps:
            counter.release(key)
        if self._unregister is not None:
            self._unregister()
            self._unregister = None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        recheck, self._recheck, self._again = self._recheck, None, None
        if recheck is not None and recheck is not asyncio.current_task():
            recheck.cancel()
        self._end = self._loop = None

    @property
    def holds_anything(self) -> bool:
        """True while a cap, a revocation entry, an expiry timer or a re-check is held (False after release)."""
        return bool(self._caps) or self._unregister is not None or self._expiry is not None or self._recheck is not None

    def error_data(self, code: str) -> dict[str, str]:
        """SSE's ``event: error`` data for ``end(code)``: a re-check's refusal, or the credentials' end."""
        denied = self.denied
        if code == DENIED and denied is not None:
            return {"code": denied.error_code, "detail": denied.detail}
        return {"code": code, "detail": "Reconnect with a fresh token"}

    # -- internals ------------------------------------------------------------------------------

    def _register(self) -> None:
        if self._loop is not None and self._unregister is None and self._user_pk is not None:
            recheck = self._rechecked if self._view is not None else None
            unregister = revocations.register(self._user_pk, self._revoked, recheck)
            if self._session is not None:  # the session's logout closes it too (no re-check: those are per user)
                unregister_session = revocations.register(self._session, self._revoked)

                def unregister_both(user: Callable[[], None] = unregister) -> None:
                    user()
                    unregister_session()

                unregister = unregister_both
            self._unregister = unregister

    def _revoked(self) -> None:
        """Called by realtime.revocation, from any thread."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._ended, REVOKED)

    def _watch(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        loop = self._loop  # None until hold(): a connection not open yet has nothing to watch
        if loop is None or self._exp is None or not setting("EXPIRE_WITH_TOKEN"):
            return
        self._expiry = loop.call_later(max(0.0, float(self._exp) - time.time()), self._ended, EXPIRED)

    def _ended(self, code: str) -> None:
        end = self._end
        if end is not None:
            end(code)

    # -- re-checks (realtime.revocation's ``recheck``) ---------------------------------------------

    def _rechecked(self, fresh: FreshUser) -> None:
        """Called by realtime.revocation, from any thread: the user's permissions may have changed."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._start_recheck, fresh)

    def _start_recheck(self, fresh: FreshUser) -> None:
        if self._end is None or self._loop is None:
            return  # released meanwhile
        if self._recheck is not None:
            self._again = fresh  # runs once more when the running one is done: nothing is missed
            return
        self._recheck = self._loop.create_task(self._run_rechecks(fresh), context=clean_context())

    async def _run_rechecks(self, fresh: FreshUser) -> None:
        try:
            next_one: FreshUser | None = fresh
            while next_one is not None and self._end is not None:
                self._again = None
                try:
                    await self._readmit(next_one)
                except Exception:
                    logger.exception("Re-checking a connection of user %s failed; it stays open", self._user_pk)
                next_one = self._again
        finally:
            if self._recheck is asyncio.current_task():
                self._recheck = None

    async def _readmit(self, fresh: FreshUser) -> None:
        """Step 2 of the admission again, with the user as the database has it now."""
        view, request = self._view, self._request
        user = await fresh.get()
        if self._end is None:
            return
        if user is None or not getattr(user, "is_active", True):
            self._ended(REVOKED)
            return
        view.user = user
        request.user = user
        denied = await first_denial(get_permissions(view.permission_classes), request, view)
        if self._end is None:
            return
        if denied is not None:
            logger.info("A re-check refused a connection of user %s at %s (%s)", user.pk, _path(request),
                        getattr(denied, "code", "permission_denied"))
            self.denied = Denied.permission(denied, user)
            self._ended(DENIED)
            return
        hook = getattr(view, "on_recheck", None)
        if hook is not None:
            await hook(request)


async def credentials_of(found: Awaitable[tuple[Any, Any] | None]) -> tuple[Any, Any, AuthenticationFailed | None]:
    """``(user, token, refusal)`` from an authenticator's result: a refused token counts as none."""
    try:
        result = await found
    except AuthenticationFailed as error:
        return None, None, error
    if result is None:
        return None, None, None
    user, token = result
    return user, token, None


async def admit(
    view: Any,
    request: Any,
    credentials: Awaitable[tuple[Any, Any] | None],
    caps: Callable[[Any], Iterable[Cap]],
    anonymous: Callable[[], Any] | None = None,
) -> Admitted | Denied:
    """Admit one connection: credentials, then permissions, then caps; nothing during shutdown.

    ``credentials`` is the authenticator's awaitable ``(user, token)`` or None. The view's ``user``,
    ``auth_token`` and ``auth_error`` are set before the permissions run, and ``request.user`` too
    (``request`` is what the permissions see: the ``ws``, or SSE's HttpRequest, whose anonymous user
    is ``anonymous()``). ``caps(user)`` names the caps the connection is counted under.
    """
    if shutting_down():
        _close(credentials)
        return shutdown_denial()
    user, token, refusal = await credentials_of(credentials)
    if refusal is not None and setting("STRICT_TOKENS"):
        logger.info("Refused a token (%s) at %s; STRICT_TOKENS: the connection is refused", refusal.code,
                    _path(request))
        return Denied.credentials(refusal)
    view.user, view.auth_token, view.auth_error = user, token, refusal
    request.user = user if user is not None or anonymous is None else anonymous()
    denied = await first_denial(get_permissions(view.permission_classes), request, view)
    if denied is not None:
        if refusal is None:
            return Denied.permission(denied, user)
        logger.info("Refused a token (%s) at %s; the endpoint refuses anonymous clients: the connection is refused",
                    refusal.code, _path(request))
        return Denied.credentials(refusal)
    if refusal is not None:
        logger.info("Refused a token (%s) at %s; the endpoint is public: going on as anonymous", refusal.code,
                    _path(request))
    if shutting_down():  # it began while the credentials or the permissions were awaited
        return shutdown_denial()
    admitted = Admitted(user, token, view, request)
    if not admitted.take(caps(user)):
        admitted.release()
        return TOO_MANY
    return admitted


def _close(awaitable: Awaitable[Any]) -> None:
    """An authenticator's coroutine that will not be awaited: closed, so that it is not reported as never awaited."""
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


def _path(request: Any) -> str:
    """The path being admitted (SSE's HttpRequest, or a WebSocket's scope), without its query."""
    path = getattr(request, "path", None)
    if path is None:
        path = (getattr(request, "scope", None) or {}).get("path")
    return str(path) if path is not None else "?"


def websocket_caps(user: Any, scope: Mapping[str, Any]) -> list[Cap]:
    """A WebSocket counts under its user's cap (an authenticated one) and its client address's."""
    caps: list[Cap] = []
    if user is not None and getattr(user, "pk", None) is not None:
        caps.append(user_cap(user))
    client = scope.get("client")
    if client:
        caps.append((websocket_addresses, client[0], setting("MAX_CONNECTIONS_PER_IP")))
    return caps


def user_cap(user: Any) -> Cap:
    """The per-user WebSocket cap (``MAX_CONNECTIONS_PER_USER``)."""
    return websocket_users, user.pk, setting("MAX_CONNECTIONS_PER_USER")


def sse_caps(user: Any) -> list[Cap]:
    """An SSE stream of an authenticated user counts under ``MAX_SSE_STREAMS_PER_USER``."""
    if is_authenticated(user):
        return [(sse_users, user.pk, setting("MAX_SSE_STREAMS_PER_USER"))]
    return []
