"""The AsyncAPI document: built from the routers, served at a URL, written by a command, and
accepted by the official AsyncAPI parser (``@asyncapi/parser``, run by Node from tests/node)."""

import fcntl
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.urls import path

from realtime import HasRole, IsAdmin, IsAuthenticated, Router, SSEView, WebSocketView
from realtime.asyncapi import AsyncAPIView, asyncapi_view, build_document
from tests.docs_blocks import DOCS, marked
from tests.servers import require

NODE_DIR = Path(__file__).resolve().parent / "node"


class Echo(WebSocketView):
    """Echoes every message."""

    keepalive = 0
    message_examples = {"receive": [{"text": "hi"}], "send": [{"echo": {"text": "hi"}}]}


class Orders(WebSocketView):
    permission_classes = [IsAuthenticated, HasRole("trader") | IsAdmin]
    keepalive = 15


class Prices(SSEView):
    """Prices of one symbol."""

    permission_classes = [IsAuthenticated]
    message_examples = {"send": [
        {"event": "price", "data": {"symbol": "R_100", "bid": 1.5, "ask": 1.6}, "id": "7"},
        {"event": "closed", "data": "market closed"},
    ]}


router = Router(prefix="/api", tags=["Market"])
router.register_websocket("/echo/{room}", Echo)
router.register_websocket("/orders/<int:account>", Orders)
router.register_sse("/prices/{symbol}", Prices)

urlpatterns = [
    path("asyncapi.json", AsyncAPIView.as_view(routers=[router], title="Market", version="2.1.0")),
    path("project-asyncapi.json", asyncapi_view),
]


@pytest.fixture(scope="session")
def validate():
    """A function that runs the official AsyncAPI parser on a document and returns its diagnostics."""
    node = shutil.which("node")
    require(node is not None, "Node.js (node), which runs the AsyncAPI parser")
    if not (NODE_DIR / "node_modules" / "@asyncapi" / "parser" / "package.json").exists():
        npm = shutil.which("npm")
        require(npm is not None, "npm, which installs @asyncapi/parser into tests/node/node_modules")
        with open(NODE_DIR / ".install.lock", "w") as lock:  # one install when sessions run side by side
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (NODE_DIR / "node_modules" / "@asyncapi" / "parser" / "package.json").exists():
                subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                               cwd=NODE_DIR, check=True, timeout=600)

    def run(document: dict) -> dict:
        result = subprocess.run([node, "validate.mjs"], cwd=NODE_DIR, input=json.dumps(document),
                                capture_output=True, text=True, timeout=120)
        assert result.stdout, result.stderr
        return json.loads(result.stdout)

    return run


def test_routes_become_channels_with_addresses_and_path_parameters():
    document = build_document([router])
    assert document["asyncapi"] == "3.0.0"
    channels = document["channels"]
    assert sorted(channels) == ["sse_api_prices_symbol", "ws_api_echo_room", "ws_api_orders_account"]
    assert channels["ws_api_echo_room"]["address"] == "/api/echo/{room}"
    assert channels["ws_api_orders_account"]["address"] == "/api/orders/{account}"
    assert channels["ws_api_orders_account"]["parameters"] == {
        "account": {"description": "A non-negative integer", "examples": ["1"]}
    }
    assert channels["ws_api_echo_room"]["servers"] == [{"$ref": "#/servers/websocket"}]
    assert channels["sse_api_prices_symbol"]["servers"] == [{"$ref": "#/servers/http"}]
    assert channels["ws_api_echo_room"]["summary"] == "Echoes every message."
    assert channels["ws_api_echo_room"]["tags"] == [{"name": "Market"}]


def test_protected_endpoints_carry_the_jwt_security_schemes_and_public_ones_none():
    document = build_document([router])
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["queryToken"] == {**schemes["queryToken"], "type": "httpApiKey", "name": "token", "in": "query"}
    operations = document["operations"]
    assert "security" not in operations["ws_api_echo_room_receive"]
    refs = [s["$ref"].rsplit("/", 1)[1] for s in operations["ws_api_orders_account_receive"]["security"]]
    assert refs == ["bearer", "queryToken"]
    refs = [s["$ref"].rsplit("/", 1)[1] for s in operations["sse_api_prices_symbol_send"]["security"]]
    assert refs == ["bearer", "queryToken", "session"]
    description = document["channels"]["ws_api_orders_account"]["description"]
    assert "IsAuthenticated, (HasRole('trader') | IsAdmin)" in description


def test_declared_examples_become_message_examples_with_inferred_payloads():
    document = build_document([router])
    echo = document["channels"]["ws_api_echo_room"]["messages"]
    assert echo["clientMessage"]["examples"] == [{"payload": {"text": "hi"}}]
    assert echo["clientMessage"]["payload"] == {"type": "object", "properties": {"text": {"type": "string"}}}
    assert echo["serverMessage"]["examples"] == [{"payload": {"echo": {"text": "hi"}}}]
    assert "heartbeat" not in echo  # keepalive = 0
    assert document["channels"]["ws_api_orders_account"]["messages"]["heartbeat"]["examples"] == [
        {"payload": {"type": "ping"}}
    ]
    prices = document["channels"]["sse_api_prices_symbol"]["messages"]
    assert sorted(prices) == ["closed", "error", "price"]
    assert prices["price"]["payload"]["properties"]["bid"] == {"type": "number"}
    assert prices["closed"]["contentType"] == "text/plain"
    assert [m["$ref"].rsplit("/", 1)[1] for m in document["operations"]["sse_api_prices_symbol_send"]["messages"]] \
        == ["price", "closed", "error"]
    assert "sse_api_prices_symbol_receive" not in document["operations"]  # SSE only pushes


def test_malformed_examples_are_refused_with_the_expected_shape():
    class Wrong(SSEView):
        message_examples = {"send": [{"price": 1}]}

    broken = Router()
    broken.register_sse("/wrong", Wrong)
    with pytest.raises(ValueError, match=r"\{'event': 'update', 'data'"):
        build_document([broken])


def test_the_official_parser_accepts_the_document_of_these_routers(validate):
    diagnostics = validate(build_document([router], description="Market data"))
    assert diagnostics["errors"] == []


def test_the_official_parser_accepts_the_whole_projects_document(validate):
    document = build_document()
    assert "ws_api_chat_ws_room" in document["channels"]  # the demo's and tests/liveapp's routes are in it
    assert len(document["channels"]) > 20
    assert validate(document)["errors"] == []


def test_the_projects_document_describes_the_http_publish_api_where_urls_py_includes_it(validate):
    document = build_document()
    for ident, address in (("publish", "/api/realtime/publish"), ("publish_batch", "/api/realtime/publish/batch")):
        assert document["channels"][ident]["address"] == address
        operation = document["operations"][ident]
        assert operation["bindings"]["http"]["method"] == "POST"
        assert operation["security"] == [{"$ref": "#/components/securitySchemes/publishApiKey"}]
        assert "429: rate_limited" in document["channels"][ident]["description"]
    assert "publish" not in build_document([router])["channels"]  # a document of chosen routers: theirs only
    assert validate(document)["errors"] == []


def test_the_parser_rejects_a_broken_document(validate):
    document = build_document([router])
    document["operations"]["ws_api_echo_room_send"]["messages"][0]["$ref"] = "#/channels/nowhere/messages/x"
    del document["info"]["version"]
    codes = {error["code"] for error in validate(document)["errors"]}
    assert "invalid-ref" in codes
    assert len(codes) >= 2


@override_settings(ROOT_URLCONF="tests.test_asyncapi")
def test_the_document_is_served_at_a_url_with_the_requests_host(client):
    response = client.get("/asyncapi.json", HTTP_HOST="testserver")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    document = response.json()
    assert document["info"] == {"title": "Market", "version": "2.1.0"}
    assert document["servers"]["websocket"] == {**document["servers"]["websocket"], "host": "testserver",
                                                "protocol": "ws"}
    assert sorted(document["channels"]) == sorted(build_document([router])["channels"])
    project = client.get("/project-asyncapi.json").json()
    assert "ws_api_chat_ws_room" in project["channels"]


def test_the_management_command_writes_the_document(tmp_path, capsys):
    target = tmp_path / "asyncapi.json"
    call_command("realtime_asyncapi", output=str(target), host="rt.example.com", secure=True, api_version="3.0.1")
    written = json.loads(target.read_text())
    assert written == build_document(host="rt.example.com", secure=True, version="3.0.1")
    assert written["servers"]["websocket"]["protocol"] == "wss"
    call_command("realtime_asyncapi")
    assert json.loads(capsys.readouterr().out) == build_document()


def test_the_howtos_message_examples_snippet_does_what_it_says():
    (block,) = [b for b in marked("exec", "howto/asyncapi.md") if b.argument == "asyncapi"]
    namespace = {"WebSocketView": WebSocketView}
    exec(block.code, namespace)
    readme_router = Router()
    readme_router.register_websocket("/echo", namespace["EchoWS"])
    messages = build_document([readme_router])["channels"]["ws_echo"]["messages"]
    assert messages["clientMessage"]["examples"] == [{"payload": {"hello": "world"}}]
    assert messages["serverMessage"]["examples"] == [{"payload": {"echo": {"hello": "world"}}}]
    section = (DOCS / "howto/asyncapi.md").read_text()
    assert "path(\"api/asyncapi.json\", realtime.asyncapi.asyncapi_view)" in section


def test_a_websocket_view_with_session_authentication_lists_the_session_scheme():
    from realtime import IsAuthenticated, Router, SessionAuthenticator, WebSocketView

    class Dashboard(WebSocketView):
        authenticator_class = SessionAuthenticator
        permission_classes = [IsAuthenticated]

    sessions = Router(prefix="/s")
    sessions.register_websocket("/dash", Dashboard)
    operations = build_document([sessions])["operations"]
    schemes = {tuple(s["$ref"].rsplit("/", 1)[1] for s in operation["security"]) for operation in operations.values()}
    assert schemes == {("bearer", "queryToken", "session")}
