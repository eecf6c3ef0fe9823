"""TopicSocket on real daphne: bad frames and caps over the wire; presence across two processes
through a real redis-server of this module's own, and the members of a SIGKILLed process leaving."""

import asyncio
import json
import time

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from realtime.pubsub import ids
from realtime.pubsub.channel import group_name
from realtime.topics.presence import COMPANION
from tests.history_ids import epoch, seq
from tests.servers import Daphne, prepare_database, require, which
from tests.test_channel_redis import RedisServer
from tests.waiting import asettled, await_until, layer_group, quiet_wire, redis_subscriptions

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


async def test_refresh_before_connect_says_there_is_no_user_to_refresh(live):
    ws = await opened(live.server)
    answer = await request(ws, {"op": "refresh", "ref": "r", "token": live.token("plain")})
    assert answer["error"] == {"code": "not_authenticated",
                               "detail": "The connection has no user to refresh: send connect with the token"}
    assert (await request(ws, {"op": "connect", "ref": "c", "token": live.token("plain")}))["ok"] is True
    assert (await request(ws, {"op": "refresh", "ref": "r2", "token": live.token("plain")}))["ok"] is True
    await ws.close()


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
def topics_redis(tmp_path_factory):
    require(which("redis-server") is not None, "redis-server")
    redis = RedisServer(tmp_path_factory.mktemp("topics-redis")).start()
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
def redis_cluster(topics_redis, tmp_path_factory, output_dir):
    tmp = tmp_path_factory.mktemp("topics-cluster")
    env, users = prepare_database(tmp, {"REDIS_URL": topics_redis.url})
    env = {**env, "DJANGO_SETTINGS_MODULE": "tests.topics_settings", "TEST_PRESENCE_TIMEOUT": str(PRESENCE_TIMEOUT)}
    servers = [Daphne(env, output_dir / f"daphne-topics-{name}.log").start() for name in "ab"]
    yield servers, env, users, output_dir
    for server in servers:
        server.stop()


async def presence_bridges(redis, channel, count):
    """Wait until ``count`` processes subscribe to the presence companion of ``channel`` in Redis."""
    group = layer_group(group_name(COMPANION + channel))
    await await_until(lambda: redis_subscriptions(redis.client(), group) == count, interval=0.05,
                      message=f"{count} processes in the presence group of {channel}")


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


async def test_presence_is_one_member_per_user_seen_from_both_processes(redis_cluster, topics_redis):
    (a, b), _, users, _ = redis_cluster
    channel = "lobby:two-processes"
    watchers = [await opened(server) for server in (a, b)]
    for watcher in watchers:
        assert (await request(watcher, {"op": "subscribe", "ref": "w", "channel": channel}))["ok"]
    await presence_bridges(topics_redis, channel, 2)  # each process's bridge joins the companion channel's group
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


async def test_the_members_of_a_killed_process_leave_within_the_timeout(redis_cluster, topics_redis):
    import signal

    (a, _), env, users, output_dir = redis_cluster
    channel = "lobby:killed"
    doomed = Daphne(env, output_dir / "daphne-topics-doomed.log").start()
    try:
        watcher = await opened(a)
        assert (await request(watcher, {"op": "subscribe", "ref": "w", "channel": channel}))["ok"]
        await presence_bridges(topics_redis, channel, 1)  # a's, which must hear the doomed process's join
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


# -- the direct delivery path, against the generic one, on daphne and uvicorn --------------------
# tests/wireapp serves the same TopicSocket twice: /w/topics as shipped (frames written straight to
# the transport where it has room) and /w/topics-generic with no direct writer (every frame through
# the Outbox task and the ASGI send). Each test runs on real daphne, then real uvicorn (``wire``); the
# marked ones again with DIRECT_WRITES off, where /w/topics writes nothing directly either.

DIRECT, GENERIC = "/api/w/topics", "/api/w/topics-generic"
BOTH = pytest.mark.parametrize("path", [DIRECT, GENERIC], ids=["direct", "generic"])


async def subscribed(server, path, channels, last_id=None):
    ws = await opened(server, path)
    for i, name in enumerate(channels):
        frame = {"op": "subscribe", "ref": f"s{i}", "channel": name}
        if last_id is not None:
            frame["last_id"] = last_id
        answer = await request(ws, frame)
        assert answer["ok"] and answer["ref"] == f"s{i}", answer
    return ws


async def script(server, **params):
    """Publish in the server (tests.wireapp.routing.TopicScript); returns once all is published."""
    async with websockets.connect(f"{server.ws_url}/api/w/topic-script") as ws:
        await ws.send(json.dumps(params))
        assert json.loads(await asyncio.wait_for(ws.recv(), 60)) == {"published": params["count"]}


async def frames(ws, count, timeout=30):
    """The next ``count`` delivered frames (messages, gaps, presence), the ``p`` padding left out."""
    out = []
    for _ in range(count):
        frame = await receive(ws, timeout)
        if frame["op"] == "message":
            frame["data"].pop("p", None)
        out.append(frame)
    return out


async def wire_report(server):
    async with websockets.connect(f"{server.ws_url}/api/w/report") as ws:
        return json.loads(await ws.recv())


@pytest.mark.also_without_direct_writes
async def test_direct_and_generic_deliver_the_same_frames_in_order_across_channels(wire):
    names = [f"wt:order-{i}" for i in range(3)]
    report = await quiet_wire(wire)
    before, closed = report["direct"], report["closed"]
    direct, generic = await subscribed(wire, DIRECT, names), await subscribed(wire, GENERIC, names)
    await script(wire, channels=names, count=300)
    by_direct, by_generic = await asyncio.gather(frames(direct, 300), frames(generic, 300))
    assert by_direct == by_generic
    assert [{**f, "id": seq(f["id"])} for f in by_direct] == [
        {"op": "message", "channel": names[n % 3], "id": n // 3 + 1, "data": {"n": n}} for n in range(300)
    ]
    await direct.close()
    await generic.close()
    ended = {view: len(closed.get(view, [])) + 1 for view in ("Topics", "GenericTopics")}
    await asettled(lambda: wire_report(wire),  # the frame counts are added as each connection ends
                   lambda now: all(len(now["closed"].get(view, [])) >= n for view, n in ended.items()), 10, 0.05)
    after = (await wire_report(wire))["direct"]
    if wire.direct_writes:
        assert after.get("Topics", 0) - before.get("Topics", 0) > 0, "the direct path was never taken"
    else:
        assert after.get("Topics", 0) == 0, "a frame was written directly with DIRECT_WRITES off"
    assert after.get("GenericTopics", 0) == 0


@pytest.mark.also_without_direct_writes
async def test_resuming_meets_the_live_messages_without_a_duplicate_or_a_hole(wire):
    """Subscribing with last_id while the channel is being published to: reply, replay, then live."""
    name = "wt:seam"
    watcher = await subscribed(wire, DIRECT, [name])
    publishing = asyncio.create_task(script(wire, channels=[name], count=400, pause=0.003))
    while (seen := await receive(watcher))["data"]["n"] < 10:  # past id 10: the resume point below is in the history
        pass
    resume_from = ids.make(epoch(seen["id"]), 10)
    await watcher.close()
    sockets, delivered = [], []
    for path in (DIRECT, GENERIC):
        ws = await opened(wire, path)
        answer = await request(ws, {"op": "subscribe", "ref": "r", "channel": name, "last_id": resume_from})
        assert answer["data"]["recovered"] is True and seq(answer["data"]["last_id"]) > 10, answer
        sockets.append(ws)
    await publishing
    for ws in sockets:
        delivered.append(await frames(ws, 390))
        await ws.close()
    by_direct, by_generic = delivered
    assert by_direct == by_generic
    assert [(f["id"], f["data"]["n"]) for f in by_direct] == [(ids.make(epoch(resume_from), n + 1), n)
                                                               for n in range(10, 400)]


async def test_presence_frames_keep_their_place_among_the_messages(wire):
    name = "wlobby:mix"
    direct, generic = await subscribed(wire, DIRECT, [name]), await subscribed(wire, GENERIC, [name])
    await script(wire, channels=[name], count=60, announce={"20": "join", "40": "leave"})
    by_direct, by_generic = await asyncio.gather(frames(direct, 62), frames(generic, 62))
    assert by_direct == by_generic
    kinds = [f["data"]["n"] if f["op"] == "message" else (f["op"], f["member"]["id"]) for f in by_direct]
    assert kinds == [*range(20), ("join", 20), *range(20, 40), ("leave", 40), *range(40, 60)]
    await direct.close()
    await generic.close()


@BOTH
@pytest.mark.also_without_direct_writes
async def test_a_subscriber_that_stops_reading_is_told_what_it_missed_on_every_channel(wire, path):
    """received + missed == published on each channel, in order: no message lost uncounted."""
    from tests.raw_ws import RawClient, frame

    names = [f"wslow:gap-{path.rsplit('/', 1)[1]}-{i}" for i in range(2)]
    slow = RawClient(wire.port, path, rcvbuf=4096)
    try:
        for i, name in enumerate(names):
            slow.send(frame(0x1, json.dumps({"op": "subscribe", "ref": str(i), "channel": name}).encode()))
            assert json.loads(slow.read_frame()[1])["ok"]
        await script(wire, channels=names, count=1500, size=4000, pause=0)  # what the queues could not hold is counted
        seen = {name: [] for name in names}
        missed = dict.fromkeys(names, 0)
        slow.sock.settimeout(5)
        while sum(len(s) for s in seen.values()) + sum(missed.values()) < 1500:
            _, data = await asyncio.to_thread(slow.read_frame)
            message = json.loads(data)
            if message["op"] == "gap":
                missed[message["channel"]] += message["missed"]
            else:
                assert message["op"] == "message"
                seen[message["channel"]].append(message["data"]["n"])
        assert sum(missed.values()) > 0, "the client was never behind: the test did not exercise the queue"
        for i, name in enumerate(names):
            numbers = seen[name]
            assert numbers == sorted(numbers) and len(numbers) == len(set(numbers))
            assert all(n % 2 == i for n in numbers) and numbers[-1] == 1498 + i
            assert len(numbers) + missed[name] == 750
    finally:
        slow.close()


@BOTH
async def test_a_subscriber_that_never_reads_is_closed_as_a_slow_consumer(wire, path):
    from tests.raw_ws import RawClient, frame

    view = "Topics" if path == DIRECT else "GenericTopics"
    name = f"wslow:never-{view}"
    before = (await wire_report(wire))["closed"].get(view, []).count(4008)
    slow = RawClient(wire.port, path, rcvbuf=4096)
    try:
        slow.send(frame(0x1, json.dumps({"op": "subscribe", "ref": "s", "channel": name}).encode()))
        assert json.loads(slow.read_frame()[1])["ok"]
        # Published over some seconds, so the sends wait past the 2 s timeout (a one-shot flood only
        # fills the bounded queue, which the kernel's buffers then take: not a slow consumer).
        publishing = asyncio.create_task(script(wire, channels=[name], count=1500, size=4000, pause=0.003))
        await asettled(lambda: wire_report(wire), lambda now: now["closed"].get(view, []).count(4008) > before, 20, 0.2)
        assert (await wire_report(wire))["closed"].get(view, []).count(4008) == before + 1
        await publishing
    finally:
        slow.close()


@BOTH
async def test_unsubscribe_stops_the_delivery_of_that_channel_only(wire, path):
    names = [f"wt:unsub-{path.rsplit('/', 1)[1]}", f"wt:keep-{path.rsplit('/', 1)[1]}"]
    ws = await subscribed(wire, path, names)
    publishing = asyncio.create_task(script(wire, channels=names, count=400, pause=0.003))
    got = {name: [] for name in names}
    while len(got[names[0]]) < 20:
        frame = await receive(ws)
        got[frame["channel"]].append(frame["data"]["n"])
    await ws.send(json.dumps({"op": "unsubscribe", "ref": "u", "channel": names[0]}))
    while (frame := await receive(ws))["op"] != "reply":
        got[frame["channel"]].append(frame["data"]["n"])
    assert frame == {"op": "reply", "ref": "u", "ok": True, "data": {}}
    until_reply = len(got[names[0]])
    await publishing
    while not got[names[1]] or got[names[1]][-1] != 399:
        frame = await receive(ws)
        got[frame["channel"]].append(frame["data"]["n"])
    assert len(got[names[0]]) == until_reply, "a message of an unsubscribed channel arrived after the reply"
    assert got[names[0]] == list(range(0, 2 * until_reply, 2))
    assert got[names[1]] == list(range(1, 400, 2))
    await ws.close()


async def test_closed_topic_sockets_leave_no_subscriber_and_no_task(wire):
    async def settled(key, value):
        return (await asettled(lambda: wire_report(wire), lambda now: now[key] == value, 10, 0.1))[key]

    base = await wire_report(wire)
    for _ in range(3):
        sockets = []
        for i in range(20):
            path = DIRECT if i % 2 else GENERIC
            sockets.append(await subscribed(wire, path, ["wt:cycle", f"wslow:cycle-{i}", "wlobby:cycle"]))
        assert (await wire_report(wire))["topic_subscribers"] == base["topic_subscribers"] + 20 * 4  # + presence
        await script(wire, channels=["wt:cycle", "wlobby:cycle"], count=20, pause=0)
        for ws in sockets:
            assert len(await frames(ws, 10)) == 10
            await ws.close()
        assert await settled("topic_subscribers", base["topic_subscribers"]) == base["topic_subscribers"]
        assert await settled("tasks", base["tasks"]) <= base["tasks"]
