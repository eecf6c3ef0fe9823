"""The client's address: ``X-Forwarded-For`` believed only from the proxies in ``REALTIME["TRUSTED_PROXIES"]``.

:class:`~realtime.app.CoreApp` calls :func:`resolve_client` on every ``websocket`` and ``http`` scope
before routing it, so WebSocket views (the per-address cap), SSE views and Django (``REMOTE_ADDR``,
which the login throttles count) all see one address, on daphne and uvicorn alike:

- the direct peer (``scope["client"]``) is not a trusted proxy: it is the client, whatever its
  headers say (a daphne port reached directly cannot be told another address);
- it is trusted and sent ``X-Forwarded-For``: the hops are read from the right, each address of a
  trusted proxy is skipped, and the first that is not trusted is the client's (every hop trusted:
  the left-most). Values left of that one were written by the client and are never read. Its
  ``X-Forwarded-Proto`` (``http``/``https``) sets the scope's scheme, and ``X-Forwarded-Port`` the
  port when the client is the peer's own;
- it is trusted and sent no ``X-Forwarded-For`` (a health check, a local tool): it is the client.

``TRUSTED_PROXIES`` is a list of addresses and networks (``["127.0.0.1", "::1"]`` by default:
a proxy on the same machine; ``"10.0.0.0/8"``; ``[]`` believes no one), read on each use.

Where we differ from daphne's ``--proxy-headers``: it believes any peer and takes the *left-most*
value, which the client chose (so ``scripts/daphne-prod`` no longer passes it). uvicorn's own
``--forwarded-allow-ips`` follows the rule used here and runs before the application; give it the
same list, or ``--no-proxy-headers``. On daphne the resolved address also replaces the one in
daphne's access log (daphne logs the very list it put in the scope).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .conf import setting

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except (ValueError, AttributeError):
            raise ImproperlyConfigured(
                f"REALTIME['TRUSTED_PROXIES'] lists addresses or networks like '127.0.0.1' or '10.0.0.0/8', "
                f"not {entry!r}"
            ) from None
    return tuple(networks)


def trusted_networks() -> tuple[Network, ...]:
    """``REALTIME["TRUSTED_PROXIES"]``, parsed (once per distinct value)."""
    configured: Iterable[str] | None = setting("TRUSTED_PROXIES")
    if isinstance(configured, str):
        raise ImproperlyConfigured(f"REALTIME['TRUSTED_PROXIES'] is a list of addresses, not {configured!r}")
    return _networks(tuple(configured or ()))


def parse_address(value: str) -> Address | None:
    """``"192.0.2.1"``, ``"[2001:db8::1]:443"``, ``"192.0.2.1:80"`` → the address; None when it is none."""
    value = value.strip()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
    return mapped if mapped is not None else address


def is_trusted(address: Address | None, networks: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in networks)


def forwarded_client(peer: str, forwarded_for: str, networks: Sequence[Network]) -> tuple[str, bool] | None:
    """The client's address given the peer and its ``X-Forwarded-For``, and whether it is the right-most
    hop (the peer's own client); None when the peer is not trusted or the header names no address.

    A hop that is not an address (a misconfigured proxy) ends the walk: the hop right of it, a
    trusted proxy, is the client then (counting a proxy is conservative: caps are shared, never evaded).
    """
    if not is_trusted(parse_address(peer), networks):
        return None
    hops = [hop for hop in (part.strip() for part in forwarded_for.split(",")) if hop]
    client: str | None = None
    for index in range(len(hops) - 1, -1, -1):
        address = parse_address(hops[index])
        if address is None:
            break
        client = str(address)
        if not is_trusted(address, networks):
            return client, index == len(hops) - 1
    return (client, False) if client is not None else None


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    values = [value.decode("latin-1") for key, value in scope.get("headers") or () if key.lower() == name]
    return ",".join(values) if values else None


def resolve_client(scope: dict[str, Any]) -> None:
    """Replace ``scope["client"]`` (and ``scope["scheme"]``) with what a trusted proxy says; in place."""
    client = scope.get("client")
    if not client:
        return
    forwarded_for = _header(scope, b"x-forwarded-for")
    if forwarded_for is None:
        return
    networks = trusted_networks()
    if not networks:
        return
    resolved = forwarded_client(str(client[0]), forwarded_for, networks)
    if resolved is None:
        return
    host, own_client = resolved
    port = 0
    forwarded_port = _header(scope, b"x-forwarded-port") if own_client else None
    if forwarded_port is not None and forwarded_port.strip().isdigit():
        port = int(forwarded_port.strip())
    if isinstance(client, list):
        client[:] = [host, port]  # daphne's own list: its access log names the client too
    else:
        scope["client"] = (host, port)
    proto = (_header(scope, b"x-forwarded-proto") or "").split(",", 1)[0].strip().lower()
    if proto in ("http", "https"):
        secure = proto == "https"
        if scope["type"] == "websocket":
            scope["scheme"] = "wss" if secure else "ws"
        else:
            scope["scheme"] = proto


class TrustedProxyMiddleware:
    """:func:`resolve_client` for an ASGI application other than CoreApp (which applies it itself)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            resolve_client(scope)
        await self.app(scope, receive, send)
