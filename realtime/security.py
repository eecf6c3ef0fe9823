"""Origin checks and per-process connection caps.

Origins are validated with Channels' own ``OriginValidator`` matching (scheme, host, port,
``.example.com`` wildcards), against ``REALTIME["ALLOWED_ORIGINS"]`` or, by default, the project's
``ALLOWED_HOSTS``. A request with no ``Origin`` header is allowed by default: browsers always send
one, so a missing Origin means a non-browser client, which cross-site WebSocket hijacking cannot
involve. Set ``ALLOW_MISSING_ORIGIN`` to False to refuse them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from urllib.parse import urlparse

from channels.security.websocket import OriginValidator

from .conf import setting


def origin_allowed(headers: Mapping[str, str]) -> bool:
    """Whether a WebSocket handshake's Origin may connect."""
    origin = headers.get("origin")
    if origin is None:
        return bool(setting("ALLOW_MISSING_ORIGIN"))
    allowed = setting("ALLOWED_ORIGINS")
    if allowed is None:
        from django.conf import settings

        allowed = list(settings.ALLOWED_HOSTS) or (["localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
    try:
        parsed = urlparse(origin)
    except ValueError:
        return False
    return OriginValidator(None, allowed).valid_origin(parsed)


class ConnectionCounter:
    """Open connections per key (a user id, a client address) in this process."""

    def __init__(self) -> None:
        self.counts: Counter[object] = Counter()

    def acquire(self, key: object, limit: int | None) -> bool:
        """Count one more connection for ``key``; False (and nothing counted) when over ``limit``."""
        if limit is not None and self.counts[key] >= limit:
            return False
        self.counts[key] += 1
        return True

    def release(self, key: object) -> None:
        self.counts[key] -= 1
        if self.counts[key] <= 0:
            del self.counts[key]


websocket_users = ConnectionCounter()
websocket_addresses = ConnectionCounter()
sse_users = ConnectionCounter()
