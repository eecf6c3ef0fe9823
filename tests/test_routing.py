"""Routers, path conversion, CoreApp's protocol routing and the middleware bypass."""

import pytest
from channels.testing import HttpCommunicator, WebsocketCommunicator
from django.http import HttpResponseForbidden
from django.test import override_settings

from realtime import AutoRouter, CoreApp, Router, SSEView, WebSocketView
from realtime.routing import DuplicateRouteError, RouteConflictError, join_paths, to_django_path
from realtime.specificity import Pattern, Relation, compare


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("/ws/{room}", "ws/<room>"),
        ("/items/{id:int}", "items/<int:id>"),
        ("/items/<int:id>", "items/<int:id>"),
        ("/a/{x}/b/<slug:y>", "a/<x>/b/<slug:y>"),
        ("/", ""),
    ],
)
def test_to_django_path(template, expected):
    assert to_django_path(template) == expected


def test_join_paths():
    assert join_paths("/api", "/trading", "/ws/{s}") == "/api/trading/ws/{s}"
    assert join_paths("", "/x/") == "/x/"


class Echo(WebSocketView):
    keepalive = 0

    async def on_connect(self, ws, **params):
        await ws.send_json(params)


class Events(SSEView):
    async def stream(self, request, **params):
        yield {"data": "x"}


def test_prefixes_propagate_through_included_routers():
    inner = Router(prefix="/trading", tags=["Trading"])
    inner.register_websocket("/ws/ticks/{symbol}", Echo)
    inner.register_sse("/events/{userId}", Events)
    api = AutoRouter(prefix="/api")
    api.include_router(inner)
    assert [(r.kind, r.path) for r in api.routes] == [
        ("websocket", "/api/trading/ws/ticks/{symbol}"),
        ("sse", "/api/trading/events/{userId}"),
    ]
    assert [str(p.pattern) for p in api.urls] == ["api/trading/events/<userId>"]


def test_two_endpoints_on_one_path_fail_at_start_up_naming_both_modules():
    router = Router(prefix="/x")
    router.register_websocket("/ws/{room}", Echo)
    router.register_websocket("/ws/<other>", Events)
    with pytest.raises(DuplicateRouteError, match="Two websocket endpoints on '/x/ws/<other>'") as refused:
        router.websocket_urlpatterns()
    assert "tests.test_routing.Echo" in str(refused.value)
    assert "tests.test_routing.Events" in str(refused.value)


def relation(p, q):
    from django.urls.converters import get_converters

    regexes = {name: c.regex for name, c in get_converters().items()}
    return compare(Pattern.parse(to_django_path(p)), Pattern.parse(to_django_path(q)), regexes)


# (p, q, how p's paths relate to q's): NARROWER means p is more specific and wins where both match.
SPECIFICITY = [
    ("/ws/moderation", "/ws/{room}", Relation.NARROWER),
    ("/ws/{room}", "/ws/moderation", Relation.WIDER),
    ("/ws/{room}", "/ws/{other}", Relation.SAME),
    ("/ws/{room}", "/ws/{room}/", Relation.SAME),  # a trailing slash is not a different endpoint
    ("/ws/a", "/ws/b", Relation.DISJOINT),
    ("/ws/{room}", "/ws/{room}/log", Relation.DISJOINT),
    ("/ws/42", "/ws/<int:n>", Relation.NARROWER),
    ("/ws/abc", "/ws/<int:n>", Relation.DISJOINT),
    ("/ws/<int:n>", "/ws/{room}", Relation.NARROWER),
    ("/ws/<int:n>", "/ws/<slug:s>", Relation.NARROWER),
    ("/ws/<uuid:u>", "/ws/<slug:s>", Relation.NARROWER),
    ("/ws/<slug:s>", "/ws/{room}", Relation.NARROWER),
    ("/ws/<int:n>", "/ws/<uuid:u>", Relation.DISJOINT),
    ("/ws/item-<int:n>", "/ws/{room}", Relation.NARROWER),
    ("/ws/item-<int:n>", "/ws/user-<int:n>", Relation.DISJOINT),
    ("/ws/item-7", "/ws/item-<int:n>", Relation.NARROWER),
    ("/rooms/{room}/moderation", "/rooms/{room}/{action}", Relation.NARROWER),
    ("/a/{x}", "/{y}/b", Relation.CONFLICT),  # both match /a/b: Go refuses this pair too
    ("/{x}/{y}", "/a/b", Relation.WIDER),
    ("/files/<path:rest>", "/files/{name}", Relation.WIDER),
    ("/files/<path:rest>", "/files/a/<path:rest>", Relation.WIDER),
    ("/files/<path:rest>", "/files", Relation.DISJOINT),
    ("/files/<path:rest>", "/other/{name}", Relation.DISJOINT),
    ("/a/<path:p>/edit", "/a/{x}/edit", Relation.CONFLICT),  # a path converter mid-pattern: not ordered
    ("/a/<path:p>/edit", "/b/{x}/edit", Relation.DISJOINT),
]


@pytest.mark.parametrize(("p", "q", "expected"), SPECIFICITY, ids=[f"{p} {q}" for p, q, _ in SPECIFICITY])
def test_specificity_rule(p, q, expected):
    assert relation(p, q) is expected


@pytest.mark.parametrize("order", ["static-first", "param-first"])
def test_static_segment_wins_over_a_parameter_whatever_the_order(order):
    class Room(Echo):
        pass

    class Moderation(Echo):
        pass

    router = Router(prefix="/x")
    pairs = [("/ws/moderation", Moderation), ("/ws/{room}", Room)]
    for path, view in pairs if order == "static-first" else pairs[::-1]:
        router.register_websocket(path, view)
    served = [route.view for route in router.routes]
    assert served == [Moderation, Room]


def test_overlapping_routes_with_neither_more_specific_are_refused_at_start_up():
    router = Router()
    router.register_websocket("/a/{x}", Echo)
    router.register_websocket("/{y}/b", Events)
    with pytest.raises(RouteConflictError, match="neither is more specific: both match '/a/b'") as refused:
        router.websocket_urlpatterns()
    assert "tests.test_routing.Echo" in str(refused.value) and "tests.test_routing.Events" in str(refused.value)
    with pytest.raises(RouteConflictError):
        CoreApp(routers=[router])


def test_specificity_orders_routes_across_included_routers_and_across_coreapp_routers():
    class Room(Echo):
        pass

    class Moderation(Echo):
        pass

    public, protected = Router(prefix="/chat"), Router(prefix="/chat")
    public.register_websocket("/ws/{room}", Room)
    protected.register_websocket("/ws/moderation", Moderation)
    api = Router(prefix="/api")
    api.include_router(public)
    api.include_router(protected)
    assert [r.view for r in api.routes] == [Moderation, Room]
    from realtime.routing import websocket_urlpatterns

    patterns = websocket_urlpatterns([public, protected])
    assert [p.callback.consumer_class for p in patterns] == [Moderation, Room]


class Moderation(WebSocketView):
    from realtime import IsAuthenticated

    permission_classes = [IsAuthenticated]
    keepalive = 0

    async def on_connect(self, ws, **params):
        await ws.send_json({"view": "moderation"})


class Room(WebSocketView):
    keepalive = 0

    async def on_connect(self, ws, **params):
        await ws.send_json({"view": "room", **params})


async def test_protected_static_route_registered_after_a_public_parameter_is_served_by_its_view():
    router = Router(prefix="/api")
    router.register_websocket("/ws/{room}", Room)
    router.register_websocket("/ws/moderation", Moderation)
    app = CoreApp(routers=[router])

    communicator = WebsocketCommunicator(app, "/api/ws/moderation")
    accepted, _ = await communicator.connect()
    assert accepted
    closed = await communicator.receive_output()
    assert (closed["type"], closed["code"]) == ("websocket.close", 4003)  # the protected view refused
    await communicator.wait()

    communicator = WebsocketCommunicator(app, "/api/ws/lobby")
    await communicator.connect()
    assert await communicator.receive_json_from() == {"view": "room", "room": "lobby"}
    await communicator.disconnect()


def test_websocket_and_sse_may_share_a_path():
    router = Router()
    router.register_websocket("/live", Echo)
    router.register_sse("/live", Events)
    assert len(router.routes) == 2


def test_bad_declarations_are_refused():
    with pytest.raises(ValueError, match="must start with '/'"):
        Router(prefix="api")
    with pytest.raises(TypeError):
        Router().register_websocket("/x", 42)


def test_autodiscover_finds_each_apps_routing_router():
    api = AutoRouter(prefix="/api")
    found = api.autodiscover()
    from project.demo.routing import router as demo_router

    assert demo_router in found
    assert api.autodiscover() == []  # idempotent


class RejectEverything:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return HttpResponseForbidden("middleware says no")


@override_settings(MIDDLEWARE=["tests.test_routing.RejectEverything"])
async def test_websockets_bypass_django_http_middleware():
    router = Router(prefix="/api")
    router.register_websocket("/echo/<int:n>", Echo)
    app = CoreApp(routers=[router])

    http = await HttpCommunicator(app, "GET", "/anything").get_response()
    assert http["status"] == 403 and http["body"] == b"middleware says no"

    communicator = WebsocketCommunicator(app, "/api/echo/5")
    accepted, _ = await communicator.connect()
    assert accepted
    assert await communicator.receive_json_from() == {"n": 5}
    await communicator.disconnect()


async def test_unknown_websocket_path_is_refused():
    app = CoreApp(routers=[Router()])
    communicator = WebsocketCommunicator(app, "/nowhere")
    accepted, _ = await communicator.connect()
    assert not accepted


async def test_lifespan_is_answered():
    from asgiref.testing import ApplicationCommunicator

    app = CoreApp(routers=[Router()])
    communicator = ApplicationCommunicator(app, {"type": "lifespan"})
    await communicator.send_input({"type": "lifespan.startup"})
    assert await communicator.receive_output() == {"type": "lifespan.startup.complete"}
    await communicator.send_input({"type": "lifespan.shutdown"})
    assert await communicator.receive_output() == {"type": "lifespan.shutdown.complete"}


async def test_spec_sse_response_function_view_with_router_get():
    from django.test import AsyncRequestFactory

    from realtime import sse_response

    router = Router(prefix="/api")

    @router.get("/events")
    async def events(request):
        async def gen():
            yield {"event": "hello", "data": "world"}
            yield {"event": "update", "data": {"count": 42}}

        return sse_response(gen())

    assert [str(p.pattern) for p in router.urls] == ["api/events"]
    view = router.urls[0].callback
    response = await view(AsyncRequestFactory().get("/api/events"))
    body = b"".join([chunk async for chunk in response.streaming_content])
    assert body == b': connected\n\nevent: hello\ndata: world\n\nevent: update\ndata: {"count":42}\n\n'
