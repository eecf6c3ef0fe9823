"""Django session authentication for WebSocket views and ``TopicSocket``: the session cookie's user.

```python
class Dashboard(WebSocketView):
    authenticator_class = SessionAuthenticator   # JWT (header, ?token=) first, then the session cookie
    permission_classes = [IsAuthenticated]
```

A server-rendered site logs its users in with ``django.contrib.auth.login``; the browser then sends
the session cookie on the WebSocket upgrade, and the socket is that user. JWT stays the default
(``TokenAuthenticator``); a view chooses sessions with ``authenticator_class``.

Browsers attach cookies to cross-site WebSocket upgrades too, and WebSockets have no same-origin
policy, so a page of another site could open a socket as the logged-in user (cross-site WebSocket
hijacking, the CSRF of WebSockets). An upgrade that carries the session cookie is therefore refused
(1008 ``Origin not allowed with a session cookie``) unless its ``Origin`` is the site's own or one
named in ``CSRF_TRUSTED_ORIGINS``/``REALTIME["ALLOWED_ORIGINS"]``; ``"*"`` and a missing Origin do
not count (``realtime.security.origin_allowed``).

The user is read as Django reads it (``django.contrib.auth.get_user``: the session's backend, and
its auth hash, so a password change ends other sessions). A cookie whose session is gone or
anonymous is no credential: the client is anonymous. Logging out (``user_logged_out``: Django's
``logout()``, the admin's logout) closes that session's sockets in every process, as a revoked token
does (4003 ``session_revoked``; ``realtime.revocation``); revoking the user closes them too. A session
that ends otherwise (it expires, or its row is deleted) is not watched: its sockets live on until
they close.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from channels.db import database_sync_to_async

from .auth import TokenAuthenticator

#: Revocation keys of sessions start so, beside users' primary keys in the same registry.
SESSION_PREFIX = "session:"


def revocation_key(session_key: str) -> str:
    """The key a session's sockets are registered under for revocation: a hash, so the session key
    itself (a credential) never travels on the control channel."""
    return SESSION_PREFIX + hashlib.sha256(session_key.encode()).hexdigest()


class SessionCredentials(dict):
    """What a session-authenticated connection holds in place of a validated token: ``session``, the
    revocation key its logout closes; no ``exp`` (sessions are not watched for expiry)."""


class SessionAuthenticator(TokenAuthenticator):
    """A JWT when one is presented (as ``TokenAuthenticator``), else the Django session cookie's user."""

    def session_key(self, headers: Mapping[str, str]) -> str | None:
        """The session cookie's value (``SESSION_COOKIE_NAME``), or None."""
        from django.conf import settings
        from django.http.cookie import parse_cookie

        cookie = headers.get("cookie")
        if not cookie:
            return None
        return parse_cookie(cookie).get(settings.SESSION_COOKIE_NAME) or None

    def ambient_credentials(self, headers: Mapping[str, str]) -> bool:
        return self.session_key(headers) is not None

    def get_session_user(self, session_key: str) -> Any:
        """The session's logged-in user, or None (sync; called through ``database_sync_to_async``)."""
        from importlib import import_module

        from django.conf import settings
        from django.contrib.auth import get_user
        from django.http import HttpRequest

        request = HttpRequest()
        request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        user = get_user(request)
        return user if user.is_authenticated else None

    async def authenticate(
        self, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> tuple[Any, Any] | None:
        """``(user, validated_token)`` for a JWT, ``(user, SessionCredentials)`` for a session, or None."""
        found = await super().authenticate(headers, query)
        if found is not None:
            return found
        key = self.session_key(headers)
        if key is None:
            return None
        user = await database_sync_to_async(self.get_session_user)(key)
        if user is None:
            return None
        return user, SessionCredentials(session=revocation_key(key))


def session_logged_out(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    """``user_logged_out``: close the sockets of the session being logged out, in every process."""
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    if not key:
        return
    import asyncio

    from .revocation import revocations

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        revocations.revoke_sync(revocation_key(key), "logout")
        return
    task = loop.create_task(revocations.revoke(revocation_key(key), "logout"))  # sent from async code
    _pending.add(task)
    task.add_done_callback(_pending.discard)


#: Revocations scheduled from async code, kept until done (a task nothing references may be collected).
_pending: set[Any] = set()
