"""Routers, path conversion, CoreApp's protocol routing and the middleware bypass."""

import pytest
from channels.testing import HttpCommunicator, WebsocketCommunicator
from django.http import HttpResponseForbidden
from django.test import override_settings

from realtime import AutoRouter, CoreApp, Router, SSEView, WebSocketView
from realtime.routing import DuplicateRouteError, join_paths, to_django_path


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


def test_two_endpoints_on_one_path_fail_at_start_up():
    router = Router(prefix="/x")
    router.register_websocket("/ws/{room}", Echo)
    router.register_websocket("/ws/<int:other>", Echo)
    with pytest.raises(DuplicateRouteError, match="Two websocket endpoints on '/x/ws/<int:other>'"):
        router.websocket_urlpatterns()


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
