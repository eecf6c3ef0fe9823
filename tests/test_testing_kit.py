"""realtime.testing: the clients by path, the SSE parser, captures, tokens, the pytest fixtures, and
the testing how-to's example (docs/howto/testing.md), run as written."""

import asyncio
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import TestCase, TransactionTestCase

from realtime import Channel, CoreApp, IsAuthenticated, Router, SSEView, Topic, TopicSocket, WebSocketView
from realtime.testing import (
    Event,
    EventStreamParser,
    HandshakeRefused,
    SSEClient,
    WebSocketClient,
    capture,
    publish,
    token_for,
    wait_for_subscribers,
)
from realtime.testing.pytest_plugin import RealtimeTestWarning
from tests.docs_blocks import marked
from tests.liveapp.routing import tick_channel

ROOT = Path(__file__).resolve().parent.parent

# --- the SSE parser, from a table --------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "events"),
    [
        ([b"data: a\n\n"], [Event("a")]),
        ([b"event: up\ndata: 1\nid: 7\n\n"], [Event("1", "up", "7")]),
        ([b"data: one\ndata: two\n\n"], [Event("one\ntwo")]),
        ([b"da", b"ta: spl", b"it\n", b"\n"], [Event("split")]),
        ([b"data: crlf\r\n\r\n"], [Event("crlf")]),
        ([b"data: cr\r", b"\r"], [Event("cr")]),  # a CR ends a line at once
        ([b"data: x\r", b"\ndata: y\n\n"], [Event("x\ny")]),  # ... and a CRLF cut after its CR is one ending
        ([b"data:nospace\n\n"], [Event("nospace")]),
        ([b": ping\n\n", b"retry: 1000\n\n"], []),  # comments and retry dispatch nothing
        ([b"event: empty\n\n"], []),  # no data: nothing, as in EventSource
        ([b"data: \xc3", b"\xa9\n\n"], [Event("é")]),  # UTF-8 cut between chunks
        ([b"\xef\xbb\xbfdata: bom\n\n"], [Event("bom")]),
        ([b"data: a\n\ndata: b\n\n"], [Event("a"), Event("b")]),
        ([b"data: unterminated\n"], []),
    ],
)
def test_event_stream_parser(chunks, events):
    parser = EventStreamParser()
    parsed = [event for chunk in chunks for event in parser.feed(chunk)]
    assert parsed == events


def test_event_stream_parser_keeps_comments_retry_and_the_last_id():
    parser = EventStreamParser()
    parser.feed(b": connected\n\nid: 3\ndata: x\n\nretry: 1500\ndata: y\n\n")
    assert parser.comments == ["connected"]
    assert parser.retry == 1500
    assert parser.last_event_id == "3"


# --- views under test, on a router of their own ------------------------------------------------

results: dict = {}
board = Channel("kit-board")


class Recorder(WebSocketView):
    keepalive = 0

    async def on_connect(self, ws, **params):
        results.setdefault("connected", []).append(params)

    async def on_receive(self, ws, data):
        if data == "close":
            await ws.close(4400, "asked to")
        elif data == "text":
            await ws.send_text("plain")
        else:
            await ws.send_json({"got": data})

    async def on_disconnect(self, ws, code):
        results.setdefault("disconnected", []).append(code)


class Members(WebSocketView):
    permission_classes = [IsAuthenticated]
    keepalive = 0

    async def on_connect(self, ws, **params):
        await ws.send_json({"user": self.user.username, "is_staff": self.user.is_staff})


class Board(WebSocketView):
    keepalive = 0

    async def stream(self, ws, **params):
        async for message in board.subscribe():
            yield message

    async def on_receive(self, ws, data):
        await board.publish(data)


class Countdown(SSEView):
    ping_interval = 0

    async def stream(self, request, start):
        for number in range(start, 0, -1):
            yield {"event": "tick", "data": {"n": number}, "id": str(number)}


class Private(SSEView):
    permission_classes = [IsAuthenticated]

    async def stream(self, request, **params):
        yield {"event": "hello", "data": self.user.username}
        yield {"event": "staff", "data": {"count": await get_user_model().objects.filter(is_staff=True).acount()}}
        await asyncio.Event().wait()


class Pinging(SSEView):
    ping_interval = 0.05

    async def stream(self, request, **params):
        await asyncio.Event().wait()
        yield {"data": "never"}


class KitRoom(Topic):
    pattern = "kit-room:{name}"
    presence = True
    allow_publish = True


class KitTopics(TopicSocket):
    topics = [KitRoom]


router = Router(prefix="/kit")
router.register_websocket("/topics", KitTopics)
router.register_websocket("/record/<int:number>", Recorder)
router.register_websocket("/members", Members)
router.register_websocket("/board", Board)
router.register_sse("/countdown/<int:start>", Countdown)
router.register_sse("/private", Private)
router.register_sse("/pinging", Pinging)
urlpatterns = router.urls


@pytest.fixture
def kit_app(settings):
    settings.ROOT_URLCONF = "tests.test_testing_kit"
    results.clear()
    return CoreApp(routers=[router])


# --- WebSocketClient -----------------------------------------------------------------------------


async def test_websocket_client_goes_through_the_router_with_path_parameters(kit_app):
    async with WebSocketClient("/kit/record/12", app=kit_app) as ws:
        await ws.send({"a": 1})
        assert await ws.receive() == {"got": {"a": 1}}
        await ws.send("text")
        assert await ws.receive_text() == "plain"
        await ws.assert_no_message()
    assert results == {"connected": [{"number": 12}], "disconnected": [1000]}


async def test_close_waits_for_on_disconnect_with_the_clients_code(kit_app):
    ws = await WebSocketClient("/kit/record/1", app=kit_app).connect()
    await ws.close(4321)
    assert results["disconnected"] == [4321]


async def test_assert_closed_checks_code_and_reason(kit_app):
    ws = await WebSocketClient("/kit/record/1", app=kit_app).connect()
    await ws.send("close")
    assert await ws.assert_closed(4400, "asked to") == (4400, "asked to")
    await ws.assert_closed(4400, re.compile("^asked"))
    with pytest.raises(AssertionError, match="Expected close code 1000, got 4400"):
        await ws.assert_closed(1000)
    with pytest.raises(AssertionError, match="Expected close reason 'other'"):
        await ws.assert_closed(4400, "other")
    with pytest.raises(AssertionError, match="the connection closed with 4400"):
        await ws.receive()
    await ws.close()


async def test_assertions_fail_with_what_came_instead(kit_app):
    async with WebSocketClient("/kit/record/1", app=kit_app, timeout=0.5) as ws:
        await ws.send({"x": 1})
        with pytest.raises(AssertionError, match=r"Expected the server to close with 4003, got a frame"):
            await ws.assert_closed(4003)
        await ws.send("text")
        with pytest.raises(AssertionError, match="Expected a JSON frame, got 'plain'"):
            await ws.receive()
        await ws.send({"y": 2})
        with pytest.raises(AssertionError, match="Expected nothing from the server"):
            await ws.assert_no_message(0.5)
    ws = await WebSocketClient("/kit/record/1", app=kit_app, timeout=0.2).connect()
    with pytest.raises(AssertionError, match=r"within 0.2 s, got nothing"):
        await ws.receive()
    await ws.close()


async def test_unknown_path_refuses_the_handshake(kit_app):
    with pytest.raises(HandshakeRefused, match="/kit/nowhere"):
        await WebSocketClient("/kit/nowhere", app=kit_app).connect()


@pytest.mark.django_db(transaction=True)
async def test_token_for_authenticates_in_the_header_or_the_query(kit_app):
    staff = await get_user_model().objects.acreate_user("staffer", is_staff=True)
    for in_query in (False, True):
        ws = await WebSocketClient("/kit/members", app=kit_app).connect(token=token_for(staff), token_in_query=in_query)
        assert await ws.receive() == {"user": "staffer", "is_staff": True}
        await ws.close()


@pytest.mark.django_db(transaction=True)
async def test_denials_are_asserted_by_close_code(kit_app):
    anonymous = await WebSocketClient("/kit/members", app=kit_app).connect()
    await anonymous.assert_closed(4003, "Authentication required")
    await anonymous.close()
    user = await get_user_model().objects.acreate_user("late")
    expired = await WebSocketClient("/kit/members", app=kit_app).connect(
        token=token_for(user, lifetime=timedelta(seconds=-1))
    )
    await expired.assert_closed(4003, re.compile("^token_expired"))
    await expired.close()
    forged = await WebSocketClient("/kit/members", app=kit_app).connect(token=token_for(user)[:-2] + "xx")
    await forged.assert_closed(4003, re.compile("^token_not_valid"))
    await forged.close()


async def test_the_projects_application_is_the_default(settings):
    assert settings.ASGI_APPLICATION == "project.asgi.application"
    async with WebSocketClient("/api/chat/ws/lobby") as ws:
        await ws.send({"hello": "world"})
        assert await ws.receive() == {"echo": {"hello": "world"}}


# --- SSEClient ---------------------------------------------------------------------------------------


async def test_sse_client_parses_events_as_they_stream_and_sees_the_end(kit_app):
    async with SSEClient("/kit/countdown/3", app=kit_app) as stream:
        stream.assert_status(200)
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert await stream.receive() == Event('{"n":3}', "tick", "3")
        await stream.assert_event("tick", {"n": 2}, id="2")
        with pytest.raises(AssertionError, match=r"Expected data \{'n': 9\} in event 'tick', got \{'n': 1\}"):
            await stream.assert_event("tick", {"n": 9})
        await stream.assert_ended()
        assert stream.parser.comments == ["connected"]
        with pytest.raises(AssertionError, match="the stream ended"):
            await stream.receive()


async def test_an_endless_stream_is_read_incrementally_and_closed_by_the_client(kit_app):
    stream = await SSEClient("/kit/pinging", app=kit_app).connect()
    await stream.assert_no_event(0.3)
    assert "ping" in stream.parser.comments  # the pings arrived, and are not events
    assert not stream.ended
    await stream.close()


@pytest.mark.django_db(transaction=True)
async def test_sse_refusals_and_a_token_through_django(kit_app):
    refused = await SSEClient("/kit/private", app=kit_app).connect()
    refused.assert_status(401)
    await refused.assert_event("error", {"code": "not_authenticated", "detail": "Authentication required"})
    await refused.assert_ended()
    await refused.close()
    with pytest.raises(AssertionError, match="Expected status 200 from '/kit/private', got 401"):
        refused.assert_status(200)

    user = await get_user_model().objects.acreate_user("reader")
    async with SSEClient("/kit/private", app=kit_app, token=token_for(user)) as stream:
        await stream.assert_event("hello", "reader")
        await stream.assert_event("staff", {"count": 0})


async def test_the_http_side_runs_djangos_middleware():
    async with SSEClient("/api/t/sse/quiet") as stream:
        await stream.assert_event("hello", "stamped")  # tests.liveapp.middleware.Stamp set it


# --- capture and publish ---------------------------------------------------------------------------


async def test_capture_records_publishes_by_channel_or_name():
    other = Channel("kit-other")
    with capture(board) as on_board, capture("kit-other") as by_name, capture() as everything:
        await board.publish({"a": 1})
        await other.publish("b")
        await board.publish({"a": 1})
    await board.publish("after")  # not recorded: the captures are closed
    assert on_board.messages == [{"a": 1}, {"a": 1}]
    on_board.assert_published({"a": 1}, count=2)
    on_board.assert_published(count=2)
    assert by_name.messages == ["b"]
    assert everything.count == 3
    assert len(on_board) == 2
    assert [record.delivered for record in on_board.records] == [0, 0]
    with pytest.raises(AssertionError, match=r"Expected \{'a': 2\} to be published on 'kit-board'"):
        on_board.assert_published({"a": 2})
    with pytest.raises(AssertionError, match="Expected 1 publishes of"):
        on_board.assert_published({"a": 1}, count=1)
    with pytest.raises(AssertionError, match="Expected nothing published"):
        by_name.assert_nothing_published()
    assert Channel.publish.__name__ == "publish" and not hasattr(Channel.publish, "__wrapped__")


def test_capture_sees_publish_sync_from_sync_code():
    with capture(board) as published:
        board.publish_sync({"from": "a command"})
    published.assert_published({"from": "a command"}, count=1)


async def test_a_view_fed_by_a_channel_and_publishing_to_it(kit_app):
    async with WebSocketClient("/kit/board", app=kit_app) as ws:
        assert await publish(board, {"from": "test"}) == 1  # waited for the view to subscribe
        assert await ws.receive() == {"from": "test"}
        with capture(board) as published:
            await ws.send({"from": "client"})
            assert await published.wait_for(1) == [{"from": "client"}]
        assert published.records[0].delivered == 1
        assert await ws.receive() == {"from": "client"}
    with pytest.raises(AssertionError, match="Expected 1 subscribers on"):
        await wait_for_subscribers(board, timeout=0.1)
    with capture(board) as published, pytest.raises(AssertionError, match="Expected 1 publishes"):
        await published.wait_for(1, timeout=0.1)



@pytest.mark.django_db(transaction=True)
async def test_capture_records_topic_publishes_from_the_server_and_from_topicsocket_clients(kit_app):
    user = await get_user_model().objects.acreate_user("topical")
    async with WebSocketClient("/kit/topics", app=kit_app) as ws:
        await ws.send({"op": "connect", "ref": "1", "token": token_for(user)})
        assert (await ws.receive())["ok"] is True
        with capture("kit-room:lobby") as published, capture() as everything:
            await ws.send({"op": "subscribe", "ref": "2", "channel": "kit-room:lobby"})
            assert (await ws.receive())["ref"] == "2"
            assert (await ws.receive())["op"] == "join"  # presence: the first frame after the reply
            await ws.send({"op": "publish", "ref": "3", "channel": "kit-room:lobby", "data": {"from": "client"}})
            assert await published.wait_for(1) == [{"from": "client"}]
            assert await KitRoom.publish({"from": "server"}, name="lobby") is None  # no history: no id
        published.assert_published({"from": "client"}, count=1)
        published.assert_published({"from": "server"}, count=1)
        assert published.records[0].delivered == 1  # this socket
        # capture() with no channel also sees the presence frame, on the topic's companion channel.
        assert any(isinstance(m, dict) and m.get("op") == "join" for m in everything.messages)


def test_a_publish_never_awaited_is_still_logged_under_capture(caplog):
    with capture(board) as published:
        board.publish({"forgot": "await"})  # sync code, no running loop: the guard's coroutine, dropped
    published.assert_nothing_published()  # nothing was done, and the capture says so
    errors = [r.getMessage() for r in caplog.records if r.name == "realtime.channel" and r.levelname == "ERROR"]
    assert len(errors) == 1 and "was never awaited" in errors[0] and "publish_sync" in errors[0], errors

# --- the pytest fixtures ------------------------------------------------------------------------------


async def test_fixtures_hand_out_connected_clients_and_close_them(realtime_websocket, realtime_sse,
                                                                  realtime_capture, realtime_token):
    published = realtime_capture(tick_channel)
    ws = await realtime_websocket("/api/t/channel-ticks/R_50")
    await ws.send({"symbol": "R_50", "bid": 1})
    assert await ws.receive() in ({"delivered": 1}, {"symbol": "R_50", "bid": 1})
    published.assert_published({"symbol": "R_50", "bid": 1})
    stream = await realtime_sse("/api/t/sse/hello")
    await stream.assert_event("hello", "world")
    assert realtime_token is token_for
    # not closed here: the fixtures close them, which test_fixtures_left_nothing_open checks


def test_fixtures_left_nothing_open():
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from realtime.testing.application import quiet_connections

    assert quiet_connections.depth == 0
    for signal in (request_started, request_finished):  # put back on both signals
        assert signal.disconnect(close_old_connections)
        signal.connect(close_old_connections)
    assert tick_channel.subscriber_count == 0
    assert not hasattr(Channel.publish, "__wrapped__")


def test_connections_kept_takes_close_old_connections_off_the_request_signals_meanwhile():
    from django.core.signals import request_started
    from django.db import close_old_connections

    from realtime.testing import connections_kept

    with connections_kept(), connections_kept():
        assert not request_started.disconnect(close_old_connections)
    assert request_started.disconnect(close_old_connections)
    request_started.connect(close_old_connections)


@pytest.mark.django_db
async def test_fixtures_warn_an_async_test_on_a_rolled_back_transaction(recwarn, realtime_websocket):
    warned = [w for w in recwarn if issubclass(w.category, RealtimeTestWarning)]
    assert len(warned) == 1
    assert "django_db(transaction=True)" in str(warned[0].message)


# --- Django's test cases ------------------------------------------------------------------------------


class RolledBack(TestCase):
    """Rows of the test's transaction are seen by the views, SSE through Django's handler included."""

    @classmethod
    def setUpTestData(cls):
        cls.boss = get_user_model().objects.create_user("boss", is_staff=True)

    def setUp(self):
        self.app = CoreApp(routers=[router])

    async def test_a_websocket_view_loads_the_user_created_in_the_transaction(self):
        async with WebSocketClient("/kit/members", app=self.app, token=token_for(self.boss)) as ws:
            self.assertEqual(await ws.receive(), {"user": "boss", "is_staff": True})

    async def test_an_sse_view_queries_rows_of_the_transaction(self):
        with self.settings(ROOT_URLCONF="tests.test_testing_kit"):
            async with SSEClient("/kit/private", app=self.app, token=token_for(self.boss)) as stream:
                await stream.assert_event("hello", "boss")
                await stream.assert_event("staff", {"count": 1})


class Committed(TransactionTestCase):
    async def test_views_see_committed_rows(self):
        user = await get_user_model().objects.acreate_user("committed")
        async with WebSocketClient("/api/t/private", token=token_for(user)) as ws:
            await ws.send("hi")
            self.assertEqual(await ws.receive(), {"user": "", "msg": "hi"})


def test_the_kits_names_all_resolve_and_the_plugin_imports_none_of_them():
    import realtime.testing

    for name in realtime.testing.__all__:
        assert getattr(realtime.testing, name) is not None, name
    code = (
        "import sys, realtime.testing.pytest_plugin; "
        "print(sorted(m for m in sys.modules if m.startswith(('realtime', 'channels'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "['realtime', 'realtime.testing', 'realtime.testing.pytest_plugin']"


def test_capture_stays_the_function_whichever_name_of_its_module_is_used_first():
    """Importing realtime.testing.capture binds the module to the package attribute of the same name."""
    code = (
        "import realtime.testing as kit; kit.wait_for_subscribers; "
        "from realtime.testing import capture; print(callable(capture), capture.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ["True", "realtime.testing.capture"]


# --- the how-to's example, as written ---------------------------------------------------------------


def example_files() -> dict[str, str]:
    """The files of docs/howto/testing.md's example app (its ``<!-- example: PATH -->`` blocks)."""
    return {block.argument: block.code for block in marked("example", "howto/testing.md")}


def test_the_howtos_example_passes_as_written(tmp_path):
    files = example_files()
    assert sorted(files) == ["inbox/routing.py", "inbox/tests/test_endpoints.py", "inbox/tests/test_with_testcase.py"]
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    for package in ("inbox", "inbox/tests", "mysite"):
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    install = {block.argument: block.code for block in marked("install", "howto/testing.md")}
    # The project's settings: this suite's, then the how-to's fragment that adds the app.
    (tmp_path / "mysite" / "settings.py").write_text(
        "from tests.settings import *  # noqa: F403\n\n" + install["append mysite/settings.py"] + "\n"
    )
    # The how-to's pytest configuration, as written (without this repository's pyproject.toml).
    (tmp_path / "pyproject.toml").write_text(install["write pyproject.toml"] + "\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    env.pop("DJANGO_SETTINGS_MODULE")  # pytest-django set it for this session; the ini's must win
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "realtime.testing.pytest_plugin", "-p", "no:cacheprovider",
         "inbox"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\b7 passed\b", result.stdout), result.stdout[-2000:]
    assert "RealtimeTestWarning" not in result.stdout  # the example's database marks are the right ones
