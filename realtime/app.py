"""CoreApp: the project's ASGI application, a protocol router.

``websocket`` scopes go straight to the endpoints declared on the routers and never pass through
Django's HTTP middleware (which is written for requests and responses, not sockets); ``http``
scopes, SSE included, go to Django with its whole middleware stack; ``lifespan`` is answered.
Both kinds first get their client address from a trusted proxy's headers (``realtime.proxies``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterable
from typing import Any

from django.urls import Resolver404, URLResolver
from django.urls.resolvers import RegexPattern

from . import checks, servers
from .connection import can_deny_with_status, deny_handshake
from .flow import SendGuard
from .ops import fleet, prometheus
from .ops.connections import HttpContext, current_http
from .ops.stats import stats
from .proxies import resolve_client
from .routing import AutoRouter, Router, websocket_urlpatterns

logger = logging.getLogger("realtime.app")


class WebSocketRouter:
    """Resolves a WebSocket path against the declared routes, with Django's converters."""

    def __init__(self, routers: Iterable[Router]) -> None:
        patterns = websocket_urlpatterns(routers)  # ordered by specificity across every router
        self.resolver = URLResolver(RegexPattern(r"^/"), patterns)
        self.resolver.url_patterns  # noqa: B018 - fail at start-up, not at the first connection

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.dispatch(scope, receive, send)

    def dispatch(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        """The endpoint's coroutine for this connection, to be awaited by the caller.

        Not a coroutine itself, and it calls a view class directly rather than through Channels'
        ``as_asgi`` wrapper: every coroutine frame between the server and the view lives as long
        as the connection, and these two cost an idle socket half a KiB. Neither a copy of the
        scope nor the ResolverMatch is kept either (1.2 KiB): the server's scope is extended in
        place, with the route pattern that labels the endpoint in realtime.ops.
        """
        try:
            match = self.resolver.resolve(scope["path"])
        except Resolver404:
            return self.refuse(scope, receive, send)
        scope["url_route"] = {"args": match.args, "kwargs": match.kwargs, "route": match.route}
        endpoint = match.func
        view_class = getattr(endpoint, "consumer_class", None)
        if view_class is not None:
            return view_class(**endpoint.consumer_initkwargs)(scope, receive, send)
        return endpoint(scope, receive, send)

    @staticmethod
    async def refuse(scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Reject the handshake of an unknown path: HTTP 404 where the server supports it, else 403."""
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        answer = "HTTP 404" if can_deny_with_status(scope) else "closed before accept"
        # A warning, as Django's "Not Found: <path>": seen without any LOGGING configured.
        logger.warning("No WebSocket endpoint at %s: handshake refused (%s)", scope["path"], answer)
        stats.refuse("websocket", 404)
        if not await deny_handshake(scope, send, 404, b"No WebSocket endpoint here"):
            await send({"type": "websocket.close", "code": 1000})


class CoreApp:
    """The ASGI application: ``application = CoreApp(routers=[api])`` in ``asgi.py``.

    Without ``routers`` it discovers a ``router`` in each installed app's ``routing.py``.
    """

    def __init__(self, routers: Iterable[Router] | None = None, http_app: Any = None) -> None:
        from django.core.asgi import get_asgi_application

        # Set Django up before anything imports models (the routers' views may).
        http_app = http_app or get_asgi_application()
        servers.install()
        checks.log_at_start()  # daphne and uvicorn run no system checks
        prometheus.serve_metrics_port()
        if routers is None:
            discovered = AutoRouter()
            discovered.autodiscover()
            routers = [discovered]
        self.routers = list(routers)
        self.http_app = http_app
        self.websocket_app = WebSocketRouter(self.routers)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if not fleet.started:
            fleet.start()
        if kind == "websocket":
            resolve_client(scope)
            await self.websocket_app.dispatch(scope, receive, send)
        elif kind == "http":
            resolve_client(scope)
            # Slow SSE clients are ended by the policy of realtime.flow; other responses pass through.
            guard = SendGuard(scope, send, receive)
            current_http.set(HttpContext(scope, guard))
            scope["realtime.server_send"] = send  # for SSE relay views' direct writes (realtime.sse_relay)
            await self.http_app(scope, guard.receive, guard.send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)
        else:
            raise ValueError(f"CoreApp cannot serve {kind!r} scopes")

    async def lifespan(self, receive: Any, send: Any) -> None:
        """Answer startup and shutdown (uvicorn sends them; daphne does not)."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
