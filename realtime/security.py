"""Origin checks, per-process connection caps and the per-address inbound byte budget.

A WebSocket's ``Origin`` is compared by scheme, host and port, as Django's CSRF check does:

- the connection's own origin (its ``Host`` header, when ``ALLOWED_HOSTS`` accepts it, with the
  connection's scheme: ``wss``, or ``SECURE_PROXY_SSL_HEADER`` behind a TLS proxy, means https);
- every entry of ``CSRF_TRUSTED_ORIGINS`` and of ``REALTIME["ALLOWED_ORIGINS"]``:
  ``"https://app.example.com"``, ``"http://localhost:3000"``, ``"https://*.example.com"``
  (subdomains), or ``"*"`` for any origin. An entry without a scheme is refused.

So ``make run`` (127.0.0.1:8000 or localhost:8000) and nginx on 127.0.0.1:8080 work without
configuration, while ``http://127.0.0.1:9999`` or ``https://localhost`` are refused there. A request
with no ``Origin`` header is allowed by default: browsers always send one, so a missing Origin means
a non-browser client, which cross-site WebSocket hijacking cannot involve. Set
``ALLOW_MISSING_ORIGIN`` to False to refuse them.

Where we differ from Channels' ``OriginValidator``: its patterns match any scheme and port
(``"localhost"`` accepts ``https://localhost:9999``), and it has no same-origin default.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Protocol
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from .conf import setting

_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


def parse_origin(value: str) -> Origin | None:
    """``"https://Example.com"`` → ``("https", "example.com", 443)``; None when it is no http(s) origin."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path or parts.query or parts.username:
        return None
    return scheme, parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS[scheme]


def _scheme(headers: Mapping[str, str], scheme: str | None) -> str:
    """http or https: the connection's scheme, or what ``SECURE_PROXY_SSL_HEADER`` says, as Django does."""
    from django.conf import settings

    proxy = settings.SECURE_PROXY_SSL_HEADER
    if proxy:
        name, secure_value = proxy
        header = name.removeprefix("HTTP_").replace("_", "-").lower()
        value = headers.get(header)
        if value is not None:
            return "https" if value.split(",", 1)[0].strip() == secure_value else "http"
    return "https" if scheme in ("wss", "https") else "http"


def own_origin(headers: Mapping[str, str], scheme: str | None = None) -> Origin | None:
    """The origin the request was addressed to (scheme, Host), or None when ``ALLOWED_HOSTS`` refuses the Host."""
    from django.conf import settings
    from django.http.request import split_domain_port, validate_host

    host = headers.get("x-forwarded-host") if settings.USE_X_FORWARDED_HOST else None
    host = (host or headers.get("host") or "").split(",")[0].strip()
    domain, _ = split_domain_port(host)
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
    if not domain or not validate_host(domain, allowed_hosts):
        return None
    return parse_origin(f"{_scheme(headers, scheme)}://{host}")


def _matches(origin: Origin, entry: str) -> bool:
    """Whether ``origin`` is ``entry`` (an origin, with ``*.`` for any subdomain) or ``entry`` is ``*``."""
    if entry == "*":
        return True
    if "://" not in entry:
        raise ImproperlyConfigured(
            f"Allowed origins need a scheme, like CSRF_TRUSTED_ORIGINS: 'https://{entry.lstrip('.')}', not {entry!r}"
        )
    wildcard = "://*." in entry
    expected = parse_origin(entry.replace("://*.", "://", 1))
    if expected is None:
        raise ImproperlyConfigured(f"Not an origin (scheme://host[:port]): {entry!r}")
    scheme, host, port = origin
    if (scheme, port) != (expected[0], expected[2]):
        return False
    return host == expected[1] or (wildcard and host.endswith("." + expected[1]))


def allowed_origins() -> list[str]:
    """The configured origins: ``CSRF_TRUSTED_ORIGINS`` then ``REALTIME["ALLOWED_ORIGINS"]``."""
    from django.conf import settings

    configured: Iterable[str] = setting("ALLOWED_ORIGINS") or ()
    if isinstance(configured, str):
        raise ImproperlyConfigured(f"REALTIME['ALLOWED_ORIGINS'] is a list of origins, not {configured!r}")
    return [*settings.CSRF_TRUSTED_ORIGINS, *configured]


def origin_allowed(headers: Mapping[str, str], scheme: str | None = None, *, ambient: bool = False) -> bool:
    """Whether a WebSocket handshake's Origin may connect (``scheme``: the ASGI scope's, ws or wss).

    ``ambient``: the handshake carries credentials the browser attached by itself (a session cookie).
    Its Origin must then be there and be trusted by name: the connection's own, or an entry of
    ``CSRF_TRUSTED_ORIGINS``/``ALLOWED_ORIGINS``; neither ``"*"`` nor ``ALLOW_MISSING_ORIGIN`` counts,
    as CORS never lets ``*`` carry credentials (a cross-site page could otherwise act as the user).
    """
    origin = headers.get("origin")
    if origin is None:
        return not ambient and bool(setting("ALLOW_MISSING_ORIGIN"))
    entries = allowed_origins()
    if "*" in entries and not ambient:
        return True
    parsed = parse_origin(origin)
    if parsed is None:  # "null" (sandboxed frames, file:), or garbage
        return False
    if parsed == own_origin(headers, scheme):
        return True
    return any(entry != "*" and _matches(parsed, entry) for entry in entries)


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


class BudgetWaiter(Protocol):
    def budget_freed(self) -> None: ...

    def budget_spent(self) -> None: ...


class ByteBudget:
    """Bytes held per key (a client address) in this process, shared by all of that key's connections.

    Each connection's :class:`realtime.inbound.InboundMeter` adds what the server holds for it and
    takes it back as its view reads; a meter that stopped reading because its key is over budget
    waits here (``wait``) and is told (``budget_freed``) when a connection of the key gives bytes back.
    """

    def __init__(self) -> None:
        self.totals: Counter[object] = Counter()
        self._members: dict[object, set[BudgetWaiter]] = {}
        self._waiting: dict[object, set[BudgetWaiter]] = {}

    def join(self, key: object, member: BudgetWaiter) -> None:
        """A connection of ``key`` shares its budget from now on (until ``leave``)."""
        self._members.setdefault(key, set()).add(member)

    def leave(self, key: object, member: BudgetWaiter) -> None:
        self.stop_waiting(key, member)
        members = self._members.get(key)
        if members is not None:
            members.discard(member)
            if not members:
                del self._members[key]

    def spent(self, key: object, by: BudgetWaiter) -> None:
        """``key`` has reached its budget through ``by``: tell every other connection of it (``budget_spent``)."""
        for member in list(self._members.get(key, ())):
            if member is not by:
                member.budget_spent()

    def add(self, key: object, delta: int) -> int:
        """Add ``delta`` bytes (negative: given back) to ``key``; its new total."""
        total = self.totals[key] + delta
        if total > 0:
            self.totals[key] = total
        else:
            self.totals.pop(key, None)
            total = 0
        if delta < 0 and key in self._waiting:
            for waiter in self._waiting.pop(key):
                waiter.budget_freed()
        return total

    def total(self, key: object) -> int:
        return self.totals.get(key, 0)

    def wait(self, key: object, waiter: BudgetWaiter) -> None:
        """Tell ``waiter`` (once) the next time bytes of ``key`` are given back."""
        self._waiting.setdefault(key, set()).add(waiter)

    def stop_waiting(self, key: object, waiter: BudgetWaiter) -> None:
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.discard(waiter)
            if not waiting:
                del self._waiting[key]

    @property
    def waiting(self) -> int:
        """How many connections wait for their key to be under budget (0 once they have all gone)."""
        return sum(len(waiting) for waiting in self._waiting.values())


#: Inbound bytes held per client address (``MAX_INBOUND_BYTES_PER_IP``).
inbound_addresses = ByteBudget()
