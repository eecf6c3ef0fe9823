"""realtime.client against a live daphne (tests/topicsapp's TopicSocket on /api/t14/ws, tests/topics_settings):
each message once across a server restart (SIGTERM and SIGKILL; history in memory and in Redis Streams),
a forbidden channel beside working ones, presence, publish replies, and a token refreshed in band."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import httpx
import pytest

from realtime.client import Gap, Join, Leave, Message, Realtime, RealtimeError
from tests.docs_blocks import marked
from tests.js_runner import RedisServer
from tests.liveapp.management.commands.seed_test_users import PASSWORD
from tests.servers import PYTHON, ROOT, Daphne, prepare_database, stop
from tests.stack import secret_key
from tests.waiting import TIMEOUT, await_until

pytestmark = pytest.mark.timeout(300)

PATH = "/api/t14/ws"
SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGKILL, id="SIGKILL")]


def environment(tmp, extra=None):
    return prepare_database(tmp, {
        "DJANGO_SETTINGS_MODULE": "tests.topics_settings",
        "DJANGO_SECRET_KEY": secret_key(tmp / "state"),
        **(extra or {}),
    })


async def login(server: Daphne, username: str) -> str:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{server.url}/api/auth/token/", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response.json()["access"]


def client(server: Daphne, path: str = PATH, **options) -> Realtime:
    return Realtime(server.ws_url + path, backoff=(0.1, 1.0), timeout=TIMEOUT, **options)


class Reader:
    """Reads a subscription in the background: its events, in order."""

    def __init__(self, subscription) -> None:
        self.events: list = []
        self.task = asyncio.get_running_loop().create_task(self._read(subscription))

    async def _read(self, subscription) -> None:
        async for event in subscription:
            self.events.append(event)

    def texts(self) -> list:
        return [event.data for event in self.events if isinstance(event, Message)]

    def gaps(self) -> list[Gap]:
        return [event for event in self.events if isinstance(event, Gap)]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture(scope="module")
def memory_server(tmp_path_factory, output_dir):
    """One daphne for the tests that do not restart it."""
    env, users = environment(tmp_path_factory.mktemp("client-memory"))
    server = Daphne(env, output_dir / "client-live-memory.log").start()
    yield server, users
    server.stop()


@pytest.fixture
def restarted_server(tmp_path, output_dir):
    """A daphne of the test's own, which it stops and starts again."""
    env, users = environment(tmp_path)
    server = Daphne(env, output_dir / "client-live-restart.log").start()
    yield server, users
    server.stop()


@pytest.fixture
def redis_servers(tmp_path, output_dir):
    redis_server = RedisServer(tmp_path).start()
    servers: list[Daphne] = []
    try:
        env, users = environment(tmp_path, {"REDIS_URL": redis_server.url})
        for name in ("a", "b"):
            servers.append(Daphne(env, output_dir / f"client-live-redis-{name}.log").start())
        yield servers, users
    finally:
        for server in servers:
            server.stop()
        redis_server.stop()


@pytest.mark.parametrize("sig", SIGNALS)
async def test_memory_history_restart_is_one_gap_and_no_new_message_is_dropped(restarted_server, sig):
    """The restarted process's history starts over: the client hears recovered false once, and
    every message published after it rejoined arrives, though its id repeats one seen before."""
    server, _ = restarted_server
    room = f"open:restart-{sig.name.lower()}"
    states: list[str] = []
    async with client(server, on_state_change=lambda state, detail: states.append(state)) as reader_rt, \
            client(server) as writer:
        reader = Reader(await reader_rt.subscribe(room))
        await writer.subscribe(room)
        for n in (1, 2, 3):
            await writer.publish(room, f"m{n}")
        await await_until(lambda: len(reader.texts()) == 3, message="the messages before the restart")
        server.stop(sig)
        await await_until(lambda: not reader_rt.is_open, message="the reader noticing the restart")
        server.start()
        await await_until(lambda: reader.gaps(), message="the reader told recovered false")
        await await_until(lambda: writer.is_open, message="the writer back")
        for n in (4, 5, 6, 7, 8):
            await writer.publish(room, f"m{n}")
        await await_until(lambda: len(reader.texts()) >= 8, message="the messages after the restart")
        await writer.ping()  # room for a ninth, if one were sent twice
        await reader_rt.ping()
        assert reader.texts() == [f"m{n}" for n in range(1, 9)]
        assert [(gap.missed, gap.recovered) for gap in reader.gaps()] == [(None, False)]
        gap_at = reader.events.index(reader.gaps()[0])
        assert gap_at == 3, reader.events  # after the old messages, before the new ones
        assert reader_rt.subscriptions[room].duplicates == 0
        assert "reconnecting" in states


@pytest.mark.parametrize("sig", SIGNALS)
async def test_redis_history_restart_delivers_each_message_exactly_once(redis_servers, sig):
    """A process restarts while another publishes: the reader resumes from its last id, no gap."""
    (a, b), _ = redis_servers
    room = f"open:redis-{sig.name.lower()}"
    async with client(a) as reader_rt, client(b) as writer:
        subscription = await reader_rt.subscribe(room)
        reader = Reader(subscription)
        await writer.subscribe(room)
        for n in (1, 2, 3):
            await writer.publish(room, f"m{n}")
        await await_until(lambda: len(reader.texts()) == 3, message="the messages before the restart")
        a.stop(sig)
        await await_until(lambda: not reader_rt.is_open, message="the reader noticing")
        for n in (4, 5, 6):
            await writer.publish(room, f"m{n}")  # while a is down: in the stream
        a.start()
        await await_until(lambda: len(reader.texts()) >= 6, message="the messages published meanwhile")
        await writer.publish(room, "m7")
        await await_until(lambda: len(reader.texts()) >= 7, message="a live message after the resume")
        await reader_rt.ping()
        assert reader.texts() == [f"m{n}" for n in range(1, 8)]
        assert reader.gaps() == []
        assert subscription.duplicates == 0
        assert reader_rt.connections == 2


async def test_a_forbidden_channel_fails_alone_beside_working_ones(memory_server):
    server, users = memory_server
    token = await login(server, "plain")
    async with client(server, token=token) as rt:
        opened = Reader(await rt.subscribe("open:beside"))
        with pytest.raises(RealtimeError) as refused:
            await rt.subscribe(f"owned:{users['editor']}")
        assert refused.value.code == "forbidden"
        own = await rt.subscribe(f"owned:{users['plain']}")
        assert own.state == "joined"
        with pytest.raises(RealtimeError) as unknown:
            await rt.subscribe("no-such-topic:1")
        assert unknown.value.code == "unknown_channel"
        assert f"owned:{users['editor']}" not in rt.subscriptions
        reply = await rt.publish("open:beside", {"text": "still here"})
        assert reply["id"] is not None
        await await_until(lambda: opened.texts(), message="the open channel's message")
        assert opened.texts() == [{"text": "still here"}]
        with pytest.raises(RealtimeError) as not_joined:
            await rt.publish(f"owned:{users['editor']}", 1)
        assert not_joined.value.code == "not_subscribed"
        assert rt.is_open and rt.connections == 1
        await opened.stop()


async def test_presence_and_publish_replies(memory_server):
    server, _ = memory_server
    room = "lobby:presence"
    plain_token, editor_token = await login(server, "plain"), await login(server, "editor")
    async with client(server, token=plain_token) as plain, client(server, token=editor_token) as editor:
        watched = await plain.subscribe(room, presence=True)
        reader = Reader(watched)
        await await_until(lambda: [e for e in reader.events if isinstance(e, Join)], message="plain's own join")
        joined = await editor.subscribe(room)
        await await_until(lambda: len(watched.members) == 2, message="the editor in plain's member list")
        names = sorted(member["info"]["name"] for member in await plain.presence(room))
        assert names == ["editor", "plain"]
        reply = await editor.publish(room, "hello")
        assert reply["id"] is not None
        await await_until(lambda: reader.texts(), message="the editor's message")
        assert reader.texts() == [{"from": "editor", "said": "hello"}]
        with pytest.raises(RealtimeError) as refused:
            await editor.subscribe("picky")
            await editor.publish("picky", "no")
        assert refused.value.code == "refused"
        await joined.unsubscribe()
        await await_until(lambda: [e for e in reader.events if isinstance(e, Leave)], message="the editor's leave")
        assert [e.member["info"]["name"] for e in reader.events if isinstance(e, Leave)] == ["editor"]
        assert [m["info"]["name"] for m in watched.members.values()] == ["plain"]
        await reader.stop()


async def test_the_token_is_refreshed_in_band_without_reconnecting(memory_server):
    server, _ = memory_server
    calls: list[float] = []
    states: list[str] = []

    async def get_token() -> str:
        calls.append(time.monotonic())
        return await login(server, "plain")

    # The server's tokens last 15 minutes: refreshing "15 minutes minus 2 s" early happens in ~2 s.
    async with client(server, get_token=get_token, refresh_before=15 * 60 - 2,
                      on_state_change=lambda state, detail: states.append(state)) as rt:
        await rt.wait_open(TIMEOUT)
        first = rt.token
        await await_until(lambda: len(calls) >= 2 and rt.token != first, message="a refreshed token")
        reader = Reader(await rt.subscribe("open:refresh"))
        await rt.publish("open:refresh", "after the refresh")
        await await_until(lambda: reader.texts(), message="a message after the refresh")
        assert states == ["connecting", "open"]
        assert rt.connections == 1
        await reader.stop()


def docs_worker() -> str:
    (block,) = [b for b in marked("exec") if b.argument == "python-client-worker"]
    return block.code


async def test_the_docs_worker_follows_a_room_and_answers(memory_server, tmp_path, output_dir):
    """The Python client page's example script, run as it is written, as "editor" in a room of the demo's chat."""
    server, _ = memory_server
    room = "room:readme-worker"
    script = tmp_path / "worker.py"
    script.write_text(docs_worker())
    env = {**os.environ, "SITE": server.url, "ROOM": room, "BOT_USER": "editor", "BOT_PASSWORD": PASSWORD,
           "PYTHONPATH": str(ROOT)}
    with open(output_dir / "client-docs-worker.log", "wb") as log:
        worker = subprocess.Popen([PYTHON, str(script)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        async with client(server, "/api/realtime/ws", token=await login(server, "plain")) as rt:
            subscription = await rt.subscribe(room, presence=True)
            reader = Reader(subscription)
            await await_until(lambda: len(subscription.members) == 2, message="the worker present in the room")
            await rt.publish(room, {"text": "!who"})
            await await_until(lambda: len(reader.texts()) >= 2, message="the worker's answer")
            assert [(m["text"], m["user"]["name"]) for m in reader.texts()] == [
                ("!who", "plain"), ("plain: here are editor, plain", "editor")]
            assert worker.poll() is None
            await reader.stop()
    finally:
        stop(worker)
