"""Routers: one declaration for WebSocket and SSE endpoints.

``Router.register_websocket`` and ``register_sse`` record routes; ``include_router`` nests routers
and propagates prefixes. The same router object then yields both the WebSocket URL patterns that
:class:`realtime.CoreApp` serves around Django's HTTP middleware and the SSE URL patterns that
go into Django's URLconf (``path("", include(api.urls))``), so there is no second list to keep in
sync.

Paths take the specification's ``{param}`` (a string), ``{param:int}``, and Django's own
``<int:param>`` converters; parameters reach the hooks as keyword arguments, converted.

Where Django's URL resolver lets the first matching pattern win, routes here are ordered by
specificity (``realtime.specificity``): ``/ws/moderation`` is served by its own view even when it is
registered after ``/ws/{room}``, and two routes that overlap with neither more specific are refused
at start-up (:class:`RouteConflictError`), as Go's ServeMux does.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.urls import URLPattern, path

from .route_checks import check_path, check_view
from .specificity import Pattern, Relation, common_example, compare

_BRACES = re.compile(r"\{(\w+)(?::(\w+))?\}")


def to_django_path(template: str) -> str:
    """``/ws/{room}`` → ``ws/<room>``; ``/items/{id:int}`` → ``items/<int:id>``; ``<int:id>`` kept."""
    converted = _BRACES.sub(lambda m: f"<{m[2]}:{m[1]}>" if m[2] else f"<{m[1]}>", template)
    return converted.lstrip("/")


def join_paths(*parts: str) -> str:
    """Join prefixes and a path with single slashes and a leading one."""
    joined = "/".join(part.strip("/") for part in parts if part and part.strip("/"))
    trailing = "/" if parts and parts[-1].endswith("/") and joined else ""
    return "/" + joined + trailing


@dataclass(frozen=True)
class Route:
    """One endpoint: its full path template, protocol, view and tags (shown by ``manage.py realtime_routes``)."""

    path: str
    view: Any
    kind: str  # "websocket" or "sse"
    name: str | None = None
    tags: tuple[str, ...] = field(default=())

    def django_path(self) -> str:
        return to_django_path(self.path)

    def asgi_or_view(self) -> Callable[..., Any]:
        """The callable Django or the WebSocket router invokes for this route."""
        if self.kind == "websocket":
            return self.view.as_asgi() if hasattr(self.view, "as_asgi") else self.view
        return self.view.as_view() if hasattr(self.view, "as_view") else self.view


class RouteConflictError(ValueError):
    """Two endpoints of the same protocol match some of the same paths and neither is more specific."""


class DuplicateRouteError(RouteConflictError):
    """Two endpoints of the same protocol were declared on the same path."""


class Router:
    """A group of endpoints under a common prefix, as in the specification."""

    def __init__(self, prefix: str = "", tags: Iterable[str] | None = None) -> None:
        if prefix and not prefix.startswith("/"):
            raise ValueError(f"Router prefix must start with '/': {prefix!r}")
        check_path(prefix, f"Router(prefix={prefix!r})")
        self.prefix = prefix.rstrip("/")
        self.tags = merge_tags(tags)
        self._routes: list[Route] = []
        self._children: list[tuple[str, Router]] = []

    def register_websocket(
        self, path: str, view: Any, name: str | None = None, tags: Iterable[str] | None = None
    ) -> None:
        """Serve ``view`` (a WebSocketView or any Channels consumer) at ``path``."""
        self._check("websocket", path, view)
        self._routes.append(Route(path, view, "websocket", name, merge_tags(self.tags, tags)))

    def register_sse(self, path: str, view: Any, name: str | None = None, tags: Iterable[str] | None = None) -> None:
        """Serve ``view`` (an SSEView, or an async function view returning sse_response) at ``path``."""
        self._check("sse", path, view)
        self._routes.append(Route(path, view, "sse", name, merge_tags(self.tags, tags)))

    def register_topics(
        self, path: str, socket: Any, name: str | None = None, tags: Iterable[str] | None = None
    ) -> None:
        """Serve the TopicSocket ``socket`` at ``path`` and its fallback binding (SSE down, POST up, for
        clients whose WebSocket upgrade is refused) at ``path + "/fallback"``, where realtime.js looks."""
        self.register_websocket(path, socket, name, tags)
        fallback_name = f"{name}-fallback" if name else None
        self.register_sse(join_paths(path, "fallback"), socket.as_fallback(), fallback_name, tags)

    @staticmethod
    def _check(kind: str, path: str, view: Any) -> None:
        """Refuse, naming the route, what would never match or would fail when a client arrives."""
        route = f"register_{kind}({path!r}, {_name(view) if callable(view) else repr(view)})"
        check_path(path, route)
        check_view(kind, view, route)

    def get(self, path: str, name: str | None = None) -> Callable[[Any], Any]:
        """Decorator form for function views, as in the specification's ``@router.get("/events")``.

        The view is served at ``path`` through Django (so it may return ``sse_response(...)``).
        """

        def register(view: Any) -> Any:
            self.register_sse(path, view, name)
            return view

        return register

    def include_router(self, router: Router, prefix: str = "") -> None:
        """Nest ``router`` (with its own prefix) under this one, behind an optional extra prefix."""
        if router is self:
            raise ValueError("A router cannot include itself")
        check_path(prefix, f"include_router(..., prefix={prefix!r})")
        self._children.append((prefix, router))

    @property
    def routes(self) -> list[Route]:
        """Every route of this router and its children, with all prefixes applied."""
        routes = [
            Route(join_paths(self.prefix, r.path), r.view, r.kind, r.name, r.tags) for r in self._routes
        ]
        for extra, child in self._children:
            for r in child.routes:
                tags = merge_tags(self.tags, r.tags)  # an including router's tags apply to its children
                routes.append(Route(join_paths(self.prefix, extra, r.path), r.view, r.kind, r.name, tags))
        for route in routes:  # a prefix's parameter may reappear in a path
            check_path(route.path, f"The {route.kind} route {route.path!r} ({_name(route.view)})")
        return order_by_specificity(routes)

    def websocket_urlpatterns(self) -> list[URLPattern]:
        """Django URL patterns for the WebSocket routes (served by CoreApp)."""
        return [self._pattern(r) for r in self.routes if r.kind == "websocket"]

    @property
    def urls(self) -> list[URLPattern]:
        """Django URL patterns for the SSE routes: ``path("", include(router.urls))``."""
        return [self._pattern(r) for r in self.routes if r.kind == "sse"]

    @staticmethod
    def _pattern(route: Route) -> URLPattern:
        return path(route.django_path(), route.asgi_or_view(), name=route.name)


def merge_tags(*groups: Iterable[str] | None) -> tuple[str, ...]:
    """The tags of every group, in order, each once: a router's, then its route's own."""
    for group in groups:
        if isinstance(group, str):
            raise TypeError(f"tags must be a list of str, e.g. tags=[{group!r}], not the str {group!r}")
    return tuple(dict.fromkeys(tag for group in groups if group for tag in group))


def order_by_specificity(routes: list[Route]) -> list[Route]:
    """The routes with every one before those it is more specific than, else in declaration order.

    Raises DuplicateRouteError for two routes of one protocol on the same path, and
    RouteConflictError for two that overlap with neither more specific.
    """
    from django.urls.converters import get_converters

    regexes = {name: converter.regex for name, converter in get_converters().items()}
    patterns = [Pattern.parse(route.django_path()) for route in routes]
    after: list[set[int]] = [set() for _ in routes]  # after[i]: the routes i must follow
    for i, j in itertools.combinations(range(len(routes)), 2):
        if routes[i].kind != routes[j].kind:
            continue
        relation = compare(patterns[i], patterns[j], regexes)
        if relation is Relation.NARROWER:
            after[j].add(i)
        elif relation is Relation.WIDER:
            after[i].add(j)
        elif relation is Relation.SAME:
            first, second = routes[i], routes[j]
            raise DuplicateRouteError(
                f"Two {second.kind} endpoints on {second.path!r}: {_name(first.view)} (at {first.path!r}) "
                f"and {_name(second.view)}. Give one of them another path."
            )
        elif relation is Relation.CONFLICT:
            raise RouteConflictError(_conflict(routes[i], routes[j], patterns[i], patterns[j]))
    ordered: list[Route] = []
    placed: set[int] = set()
    while len(ordered) < len(routes):
        index = next(i for i in range(len(routes)) if i not in placed and after[i] <= placed)
        placed.add(index)
        ordered.append(routes[index])
    return ordered


def _conflict(first: Route, second: Route, p: Pattern, q: Pattern) -> str:
    example = common_example(p, q)
    both = f"both match {example!r}" if example else "they may match the same paths"
    return (
        f"The {first.kind} endpoints {first.path!r} ({_name(first.view)}) and {second.path!r} "
        f"({_name(second.view)}) overlap and neither is more specific: {both}. Make one of them "
        "narrower in every segment (a static segment, or a stricter converter) or give it another path."
    )


def websocket_urlpatterns(routers: Iterable[Router]) -> list[URLPattern]:
    """The WebSocket URL patterns of several routers, ordered by specificity across all of them."""
    combined = Router()
    for router in routers:
        combined.include_router(router)
    return combined.websocket_urlpatterns()


def _name(view: Any) -> str:
    """``package.module.ViewClass``: where the view is declared."""
    target = view if hasattr(view, "__qualname__") else type(view)
    return f"{getattr(target, '__module__', '?')}.{target.__qualname__}"


class AutoRouter(Router):
    """A top-level router that can also discover a ``router`` in each installed app's ``routing.py``."""

    def autodiscover(self, module_name: str = "routing", attribute: str = "router") -> list[Router]:
        """Include ``<app>.routing.router`` for every installed app that declares one."""
        from django.apps import apps

        found = []
        for config in apps.get_app_configs():
            dotted = f"{config.name}.{module_name}"
            if importlib.util.find_spec(dotted) is None:
                continue
            router = getattr(importlib.import_module(dotted), attribute, None)
            if isinstance(router, Router) and all(router is not child for _, child in self._children):
                self.include_router(router)
                found.append(router)
        return found
