"""Routers, path conversion, CoreApp's protocol routing and the middleware bypass."""

import pytest
from channels.testing import HttpCommunicator, WebsocketCommunicator
from django.core.exceptions import ImproperlyConfigured
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


class Ticker(WebSocketView):
    async def stream(self, ws, **params):
        yield {"tick": 1}


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
    router.register_websocket("/ws/<other>", Ticker)
    with pytest.raises(DuplicateRouteError, match="Two websocket endpoints on '/x/ws/<other>'") as refused:
        router.websocket_urlpatterns()
    assert "tests.test_routing.Echo" in str(refused.value)
    assert "tests.test_routing.Ticker" in str(refused.value)


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
    router.register_websocket("/{y}/b", Ticker)
    with pytest.raises(RouteConflictError, match="neither is more specific: both match '/a/b'") as refused:
        router.websocket_urlpatterns()
    assert "tests.test_routing.Echo" in str(refused.value) and "tests.test_routing.Ticker" in str(refused.value)
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


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/e/:id", r"':id' is not a parameter .* write \{id\}"),
        ("/e/{room", r"'\{room' is not a parameter .* write \{name\} or \{name:int\}"),
        ("/e/room}", r"'room\}' is not a parameter"),
        ("/e/{id: int}", r"'\{id: int\}' is not a parameter .*; write '\{id:int\}' \(no spaces\)"),
        ("/e/{ id }", r"write '\{id\}' \(no spaces\)"),
        ("/e/<int:id", r"'<int:id' is not a parameter"),
        ("/e/<int: id>", r"write '<int:id>' \(no spaces\)"),
        ("/e/{room}/{room}", r"the parameter 'room' appears twice"),
        ("/e/{room}/<int:room>", r"the parameter 'room' appears twice"),
    ],
)
def test_a_path_no_request_could_match_is_refused_at_registration(path, message):
    for register, view in ((Router().register_websocket, Echo), (Router().register_sse, Events)):
        with pytest.raises(ImproperlyConfigured, match=message) as refused:
            register(path, view)
        assert str(refused.value).startswith(f"{register.__name__}({path!r}, tests.test_routing.")


@pytest.mark.parametrize(
    "path", ["/ws/{room}", "/items/{id:int}", "/items/<int:id>", "/a/{x}/b/<slug:y>", "/item-{id:int}", "/", ""]
)
def test_well_formed_paths_register(path):
    router = Router()
    router.register_websocket(path, Echo)
    router.register_sse(path, Events)
    assert len(router.routes) == 2


def test_a_parameter_of_a_prefix_repeated_in_a_path_is_refused_when_the_routes_are_built():
    rooms = Router(prefix="/rooms/{room}")
    rooms.register_websocket("/members/{room}", Echo)
    with pytest.raises(ImproperlyConfigured, match=r"'/rooms/\{room\}/members/\{room\}'.*'room' appears twice"):
        CoreApp(routers=[rooms])
    with pytest.raises(ImproperlyConfigured, match=r"Router\(prefix='/e/:id'\)"):
        Router(prefix="/e/:id")


class SyncReceive(WebSocketView):
    def on_receive(self, ws, data):
        pass


class SyncConnect(WebSocketView):
    def on_connect(self, ws, **params):
        pass


class SyncDisconnect(WebSocketView):
    def on_disconnect(self, ws, code):
        pass


class SyncGeneratorStream(WebSocketView):
    def stream(self, ws, **params):
        yield 1


class CoroutineStream(WebSocketView):
    async def stream(self, ws, **params):
        return None


class AsyncRelayMessage(WebSocketView):
    async def relay_message(self, message):
        return message


class SyncGeneratorEvents(SSEView):
    def stream(self, request, **params):
        yield {"data": 1}


class CoroutineEvents(SSEView):
    async def stream(self, request, **params):
        return None


class SyncAuthenticate(SSEView):
    def authenticate(self, request):
        return None

    async def stream(self, request, **params):
        yield {"data": 1}


def django_view(request):
    return None


@pytest.mark.parametrize(
    ("kind", "view", "message"),
    [
        ("websocket", Events, r"Events is not a WebSocketView \(an SSE or Django view: register it with register_sse"),
        ("sse", Echo, r"Echo is not an SSEView or a Django view \(a WebSocket endpoint: register it with "),
        ("sse", Echo.as_asgi(), r"Echo is a WebSocket endpoint: register it with register_websocket\(\)"),
        ("websocket", django_view, r"django_view is not an ASGI application \(scope, receive, send\)"),
        ("websocket", 42, r"needs a WebSocketView subclass, got 42"),
        ("sse", "events", r"needs an SSEView subclass or a view function"),
        ("websocket", SyncReceive, r"SyncReceive.on_receive is a plain def.*'async def on_receive\(self, \.\.\.\)'"),
        ("websocket", SyncConnect, r"SyncConnect.on_connect is a plain def"),
        ("websocket", SyncDisconnect, r"SyncDisconnect.on_disconnect is a plain def"),
        ("websocket", SyncGeneratorStream, r"stream is a sync generator.*'async def stream\(self, ws, \*\*params\)"),
        ("websocket", CoroutineStream, r"stream is an async def that never yields"),
        ("websocket", AsyncRelayMessage, r"relay_message is called in the publisher's turn.*not 'async def'"),
        ("sse", SyncGeneratorEvents, r"stream is a sync generator.*'async def stream\(self, request, \*\*params\)"),
        ("sse", CoroutineEvents, r"stream is an async def that never yields"),
        ("sse", SyncAuthenticate, r"SyncAuthenticate.authenticate is a plain def"),
    ],
)
def test_a_view_that_would_fail_when_a_client_arrives_is_refused_at_registration(kind, view, message):
    register = getattr(Router(prefix="/api"), f"register_{kind}")
    with pytest.raises(TypeError, match=message) as refused:
        register("/e", view)
    assert str(refused.value).startswith(f"register_{kind}('/e', ")


def test_views_the_server_can_call_register():
    from channels.db import database_sync_to_async

    from realtime import Channel

    feed = Channel("routing-feed")

    class PlainStream(WebSocketView):  # a plain def returning an async iterator is fine
        def stream(self, ws, **params):
            return feed.subscribe()

    class OrmReceive(WebSocketView):
        @database_sync_to_async
        def on_receive(self, ws, data):
            pass

    async def events(request, **params):
        return None

    router = Router()
    router.register_websocket("/plain", PlainStream)
    router.register_websocket("/orm", OrmReceive)
    router.register_websocket("/asgi", Echo.as_asgi())
    router.register_sse("/function", events)
    router.register_sse("/sync-function", django_view)
    assert len(router.routes) == 5


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


async def test_unknown_websocket_path_is_refused_and_logged_with_its_path(caplog, monkeypatch):
    import logging

    app = CoreApp(routers=[Router()])  # sets Django up, and its LOGGING: "realtime" does not propagate
    monkeypatch.setattr(logging.getLogger("realtime"), "propagate", True)
    communicator = WebsocketCommunicator(app, "/nowhere?token=secret")
    accepted, _ = await communicator.connect()
    assert not accepted
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "realtime.app"]
    assert logged == [("WARNING", "No WebSocket endpoint at /nowhere: handshake refused (closed before accept)")]


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


def test_register_topics_serves_the_socket_and_its_fallback_beside_it():
    from realtime import TopicSocket

    class Chat(TopicSocket):
        topics = []

    router = Router(prefix="/realtime")
    router.register_topics("/ws", Chat, name="chat")
    routes = {(route.kind, route.path): route for route in router.routes}
    assert routes[("websocket", "/realtime/ws")].view is Chat
    fallback = routes[("sse", "/realtime/ws/fallback")]
    assert fallback.view.socket_class is Chat and fallback.name == "chat-fallback"
    assert [p.pattern._route for p in router.urls] == ["realtime/ws/fallback"]
