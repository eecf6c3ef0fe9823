"""TopicSocket on real daphne: bad frames and caps over the wire; presence across two processes
through a real redis-server of this module's own, and the members of a SIGKILLed process leaving."""

import asyncio
import json
import time

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.servers import Daphne, prepare_database, require, which
from tests.test_channel_redis import RedisServer

pytestmark = pytest.mark.timeout(240)
WS = "/api/t14/ws"
#: Seconds of silence after which a process's presence members leave, in the cluster below.
PRESENCE_TIMEOUT = 3


async def opened(server, path=WS):
    return await websockets.connect(f"{server.ws_url}{path}", subprotocols=["realtime.v1"], max_queue=None)


async def receive(ws, timeout=10):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def request(ws, frame):
    await ws.send(json.dumps(frame) if not isinstance(frame, str) else frame)
    return await receive(ws)


async def until(ws, op, timeout=10):
    """The next frame with ``op``, skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        frame = await receive(ws, max(0.1, deadline - time.monotonic()))
        if frame["op"] == op:
            return frame


WIRE_ERRORS = [
    ('["not", "an", "object"]', "bad_request", None),
    ('{"op": "ping"}', "bad_request", None),
    ('{"op": "teleport", "ref": "1"}', "unknown_op", "1"),
    (json.dumps({"op": "subscribe", "ref": "1", "channel": "open:" + "x" * 300}), "unknown_channel", "1"),
    ('{"op": "subscribe", "ref": "1", "channel": "nothing:here"}', "unknown_channel", "1"),
    ('{"op": "subscribe", "ref": "1", "channel": "owned:007"}', "unknown_channel", "1"),
    ('{"op": "publish", "ref": "1", "channel": "open:z", "data": 1}', "not_subscribed", "1"),
    ('{"op": "connect", "ref": "1", "token": "x.y.z"}', "token_not_valid", "1"),
    ('{"op": "refresh", "ref": "1", "token": "x.y.z"}', "token_not_valid", "1"),
]


async def test_bad_frames_get_error_replies_and_the_connection_goes_on(live):
    ws = await opened(live.server)
    for frame, code, ref in WIRE_ERRORS:
        answer = await request(ws, frame)
        assert (answer["ok"], answer["ref"], answer["error"]["code"]) == (False, ref, code), frame
    assert await request(ws, {"op": "ping", "ref": "still"}) == {"op": "reply", "ref": "still", "ok": True, "data": {}}
    await ws.send("{not json")
    with pytest.raises(ConnectionClosed) as closed:
        await receive(ws)
    assert closed.value.rcvd.code == 1007


async def test_ten_thousand_subscribe_requests_from_one_client_are_capped_at_100(live):
    ws = await opened(live.server)

    async def send_all():
        for i in range(10_000):
            await ws.send(json.dumps({"op": "subscribe", "ref": str(i), "channel": f"open:flood-{i}"}))

    sender = asyncio.create_task(send_all())
    codes: dict[str, int] = {}
    for _ in range(10_000):
        answer = await receive(ws, timeout=60)
        key = "ok" if answer["ok"] else answer["error"]["code"]
        codes[key] = codes.get(key, 0) + 1
    await sender
    assert codes == {"ok": 100, "too_many_subscriptions": 9_900}
    assert (await request(ws, {"op": "unsubscribe", "ref": "u", "channel": "open:flood-0"}))["ok"]
    assert (await request(ws, {"op": "subscribe", "ref": "s", "channel": "open:flood-x"}))["ok"]
    await ws.close()


async def test_a_denied_channel_leaves_the_others_working(live):
    ws = await opened(live.server)
    await request(ws, {"op": "connect", "ref": "c", "token": live.token("plain")})
    mine, theirs = live.users["plain"], live.users["editor"]
    assert (await request(ws, {"op": "subscribe", "ref": "1", "channel": "open:denied-test"}))["ok"]
    refused = await request(ws, {"op": "subscribe", "ref": "2", "channel": f"owned:{theirs}"})
    assert refused["error"]["code"] == "forbidden"
    assert (await request(ws, {"op": "subscribe", "ref": "3", "channel": f"owned:{mine}"}))["ok"]
    published = await request(ws, {"op": "publish", "ref": "4", "channel": "open:denied-test", "data": {"k": 1}})
    assert published["ok"]
    message = await until(ws, "message")
    assert (message["channel"], message["data"]) == ("open:denied-test", {"k": 1})
    await ws.close()


async def test_over_the_message_rate_the_client_is_told_then_closed_with_1008(live):
    ws = await opened(live.server, "/api/t14/limited")
    answers = []
    with pytest.raises(ConnectionClosed) as closed:
        for i in range(20):
            await ws.send(json.dumps({"op": "ping", "ref": str(i)}))
        while True:
            answers.append(await receive(ws))
    assert closed.value.rcvd.code == 1008
    assert answers[-1]["error"]["code"] == "rate_limited"
    assert all(answer["ok"] for answer in answers[:-1])


# -- presence across processes -------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory, output_dir):
    require(which("redis-server") is not None, "redis-server")
    redis = RedisServer(tmp_path_factory.mktemp("topics-redis")).start()
    tmp = tmp_path_factory.mktemp("topics-cluster")
    env, users = prepare_database(tmp, {"REDIS_URL": redis.url})
    env = {**env, "DJANGO_SETTINGS_MODULE": "tests.topics_settings", "TEST_PRESENCE_TIMEOUT": str(PRESENCE_TIMEOUT)}
    servers = [Daphne(env, output_dir / f"daphne-topics-{name}.log").start() for name in "ab"]
    yield servers, env, users, output_dir
    for server in servers:
        server.stop()
    redis.stop()


def token_from(server, username):
    import httpx

    from tests.liveapp.management.commands.seed_test_users import PASSWORD

    response = httpx.post(f"{server.url}/api/auth/token/", json={"username": username, "password": PASSWORD})
    response.raise_for_status()
    return response.json()["access"]


async def member_socket(server, username, channel):
    ws = await opened(server)
    await request(ws, {"op": "connect", "ref": "c", "token": token_from(server, username)})
    assert (await request(ws, {"op": "subscribe", "ref": "s", "channel": channel}))["ok"]
    return ws


async def test_presence_is_one_member_per_user_seen_from_both_processes(redis_cluster):
    (a, b), _, users, _ = redis_cluster
    channel = "lobby:two-processes"
    watchers = [await opened(server) for server in (a, b)]
    for watcher in watchers:
        assert (await request(watcher, {"op": "subscribe", "ref": "w", "channel": channel}))["ok"]
    await asyncio.sleep(0.5)  # each process's bridge joins the companion channel's group
    tab_a = await member_socket(a, "plain", channel)
    tab_b = await member_socket(b, "plain", channel)
    for watcher in watchers:
        join = await until(watcher, "join")
        assert join["member"]["id"] == users["plain"] and join["member"]["info"] == {"name": "plain"}
    for watcher in watchers:
        answer = await request(watcher, {"op": "presence", "ref": "p", "channel": channel})
        assert answer["data"]["members"] == [{"id": users["plain"], "info": {"name": "plain"}, "connections": 2}]
    await tab_a.close()
    for watcher in watchers:  # one connection left: no leave, only one join was ever sent
        with pytest.raises(TimeoutError):
            await until(watcher, "join", timeout=1)
    await tab_b.close()
    for watcher in watchers:
        leave = await until(watcher, "leave")
        assert leave["member"] == {"id": users["plain"], "info": {"name": "plain"}, "connections": 0}
        answer = await request(watcher, {"op": "presence", "ref": "q", "channel": channel})
        assert answer["data"]["members"] == []
        await watcher.close()


async def test_the_members_of_a_killed_process_leave_within_the_timeout(redis_cluster):
    import signal

    (a, _), env, users, output_dir = redis_cluster
    channel = "lobby:killed"
    doomed = Daphne(env, output_dir / "daphne-topics-doomed.log").start()
    try:
        watcher = await opened(a)
        assert (await request(watcher, {"op": "subscribe", "ref": "w", "channel": channel}))["ok"]
        await asyncio.sleep(0.5)
        victim = await member_socket(doomed, "editor", channel)
        survivor = await member_socket(a, "staff", channel)
        joined = {(await until(watcher, "join"))["member"]["id"] for _ in range(2)}
        assert joined == {users["editor"], users["staff"]}
        doomed.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        leave = await until(watcher, "leave", timeout=30)
        waited = time.monotonic() - killed_at
        assert leave["member"]["id"] == users["editor"]
        assert waited < 30  # the bound; the configured timeout here is PRESENCE_TIMEOUT
        answer = await request(watcher, {"op": "presence", "ref": "p", "channel": channel})
        assert [m["id"] for m in answer["data"]["members"]] == [users["staff"]]
        await victim.close()
        await survivor.close()
        await watcher.close()
    finally:
        doomed.stop(signal.SIGKILL)
