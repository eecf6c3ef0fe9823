"""manage.py realtime_routes lists every endpoint with its view, permissions, options and tags."""

import json
from io import StringIO

import pytest
from channels.security.websocket import AllowedHostsOriginValidator
from django.core.management import call_command
from django.test import override_settings

from realtime import CoreApp, HasRole, IsAdmin, IsAuthenticated, Router, SSEView, WebSocketView, sse_response
from realtime.routing import merge_tags


class Uploads(WebSocketView):
    encoding = "bytes"
    subprotocol = "upload.v1"
    keepalive = 0
    max_message_size = 4096
    permission_classes = [IsAuthenticated, HasRole("editor") | ~IsAdmin]


class Feed(WebSocketView):
    async def stream(self, ws, **params):
        yield {"n": 1}


class News(SSEView):
    ping_interval = 0
    headers = {"X-Feed": "news"}

    async def stream(self, request, **params):
        yield {"data": "hi"}


async def headlines(request):
    async def gen():
        yield {"data": "x"}
    return sse_response(gen())


files = Router(prefix="/files", tags=["Files"])
files.register_websocket("/<int:folder>/upload", Uploads, name="upload", tags=["Uploads", "Files"])
news = Router(prefix="/news", tags=["News"])
news.register_sse("/{topic}", News)
news.register_sse("/headlines", headlines)
news.register_websocket("/feed", Feed)
api = Router(prefix="/v2", tags=["Public API"])
api.include_router(files)
api.include_router(news)


application = None  # the tests' ASGI_APPLICATION: a CoreApp inside an ASGI middleware, as projects wrap it


def routes(*args, **settings):
    out = StringIO()
    with override_settings(**settings):
        call_command("realtime_routes", "--json", *args, stdout=out)
    return {(route["protocol"], route["path"]): route for route in json.loads(out.getvalue())}


@pytest.fixture
def wrapped(monkeypatch):
    monkeypatch.setitem(globals(), "application", AllowedHostsOriginValidator(CoreApp(routers=[api])))
    return f"{__name__}.application"


def test_json_has_path_view_permissions_options_and_tags_of_every_route(wrapped):
    listed = routes(ASGI_APPLICATION=wrapped)

    assert set(listed) == {("websocket", "/v2/files/<int:folder>/upload"), ("sse", "/v2/news/{topic}"),
                           ("sse", "/v2/news/headlines"), ("websocket", "/v2/news/feed")}
    assert listed["websocket", "/v2/files/<int:folder>/upload"] == {
        "protocol": "websocket",
        "path": "/v2/files/<int:folder>/upload",
        "params": {"folder": "int"},
        "view": "tests.test_routes_command.Uploads",
        "name": "upload",
        "permissions": ["IsAuthenticated", "HasRole('editor') | ~IsAdmin"],
        "options": {"encoding": "bytes", "subprotocol": "upload.v1", "keepalive": 0, "max_message_size": 4096,
                    "throttle_classes": None, "authenticator": "realtime.auth.TokenAuthenticator", "push": False},
        "tags": ["Public API", "Files", "Uploads"],
    }
    topic = listed["sse", "/v2/news/{topic}"]
    assert topic["params"] == {"topic": "str"} and topic["permissions"] == ["AllowAny"]
    assert topic["options"] == {"ping_interval": 0, "headers": {"X-Feed": "news"},
                                "authenticator": "realtime.auth.TokenAuthenticator"}
    assert topic["tags"] == ["Public API", "News"]
    function_view = listed["sse", "/v2/news/headlines"]
    assert function_view["view"] == "tests.test_routes_command.headlines" and function_view["options"] == {}
    assert listed["websocket", "/v2/news/feed"]["options"]["push"] is True


def test_tag_filter_keeps_routes_with_any_of_the_tags(wrapped):
    assert set(routes("--tag", "Uploads", ASGI_APPLICATION=wrapped)) == {("websocket", "/v2/files/<int:folder>/upload")}
    assert len(routes("--tag", "News", "--tag", "Files", ASGI_APPLICATION=wrapped)) == 4
    assert routes("--tag", "Nope", ASGI_APPLICATION=wrapped) == {}


def test_table_prints_one_aligned_line_per_endpoint(wrapped):
    out = StringIO()
    with override_settings(ASGI_APPLICATION=wrapped):
        call_command("realtime_routes", stdout=out)
    lines = out.getvalue().splitlines()

    assert lines[0].split() == ["PROTOCOL", "PATH", "VIEW", "PERMISSIONS", "TAGS", "OPTIONS"]
    assert len(lines) == 5
    upload = next(line for line in lines if "/upload" in line)
    assert upload.startswith("ws ")
    assert "IsAuthenticated, HasRole('editor') | ~IsAdmin" in upload
    assert "Public API, Files, Uploads" in upload
    assert upload.endswith("encoding=bytes subprotocol=upload.v1 keepalive=0 max_message_size=4096")
    assert next(line for line in lines if "/feed" in line).endswith("push")
    assert lines[0].index("VIEW") == upload.index("tests.test_routes_command.Uploads")


def test_the_projects_own_routes_come_from_its_asgi_application_or_else_from_each_app():
    served = routes()  # tests.settings: ASGI_APPLICATION = project.asgi.application
    trade_events = served["sse", "/api/trading/events/{userId}"]
    assert trade_events["view"] == "project.trading.views.TradeEventsSSE"
    assert trade_events["permissions"] == ["IsAuthenticated & IsOwner"]
    assert trade_events["tags"] == ["Trading"] and trade_events["params"] == {"userId": "str"}
    assert served["websocket", "/api/chat/ws/{room}"]["tags"] == ["Chat"]
    discovered = routes(ASGI_APPLICATION=None)
    assert {path for _, path in discovered} == {path.removeprefix("/api") for _, path in served}


def test_router_tags_apply_to_nested_routes_once_and_must_be_a_list():
    assert merge_tags(["A", "B"], None, ["B", "C"]) == ("A", "B", "C")
    with pytest.raises(TypeError, match=r"tags=\['Chat'\]"):
        Router(prefix="/chat", tags="Chat")
    with pytest.raises(TypeError, match="list of str"):
        Router().register_websocket("/x", Feed, tags="X")
