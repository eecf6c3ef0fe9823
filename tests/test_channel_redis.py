"""Channel across two real daphne processes and a real redis-server started by these tests."""

import asyncio
import json
import re
import subprocess
import textwrap
import time

import httpx
import pytest
import redis
import websockets
from httpx_sse import aconnect_sse
from websockets.exceptions import ConnectionClosed

from realtime import BrokerUnavailable, Channel
from realtime.pubsub.channel import group_name
from realtime.pubsub.history import key as history_key
from realtime.revocation import CONTROL_CHANNEL
from tests.history_ids import seq
from tests.servers import PYTHON, ROOT, Daphne, free_port, prepare_database, require, stop, wait_for_port, which
from tests.sse_client import read_events, text_until
from tests.waiting import (
    asettled,
    await_until,
    heard_after_listening,
    layer_group,
    list_receiver,
    live_subscribers,
    primed,
    redis_subscriptions,
    ws_receiver,
)

pytestmark = pytest.mark.timeout(180)


class RedisServer:
    def __init__(self, tmp):
        self.port = free_port()
        self.tmp = tmp
        self.process = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.process = subprocess.Popen(
            [which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, process=self.process)
        return self

    def stop(self):
        stop(self.process)

    def client(self):
        return redis.Redis.from_url(self.url)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    require(which("redis-server") is not None, "redis-server")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(redis_server, tmp_path_factory, output_dir):
    tmp = tmp_path_factory.mktemp("cluster")
    env, _ = prepare_database(tmp, {"REDIS_URL": redis_server.url})
    a = Daphne(env, output_dir / "daphne-a.log").start()
    b = Daphne(env, output_dir / "daphne-b.log").start()
    yield a, b, env
    a.stop()
    b.stop()


async def publish_via(server, channel, *messages):
    async with websockets.connect(f"{server.ws_url}/api/t/publish/{channel}") as ws:
        for message in messages:
            await ws.send(json.dumps(message))
            await ws.recv()


async def receive(ws, timeout=5):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def subscribed(symbol, *servers, via):
    """One tick socket per server; returned once probes published through ``via`` reach each of them
    (a socket in another process is subscribed only once that process's bridge has joined the group)."""
    sockets = [await websockets.connect(f"{server.ws_url}/api/t/channel-ticks/{symbol}") for server in servers]
    await primed(lambda n: publish_via(via, "live-ticks", {"symbol": symbol, "probe": n}),
                 [ws_receiver(ws, lambda tick: tick.get("probe")) for ws in sockets])
    return sockets


def probe_of(via):
    """The number of a probe published through ``via`` in a followed event, or None."""
    def number(event):
        data = event[2]
        return data.get("probe") if isinstance(data, dict) and data.get("via") == via.url else None

    return number


async def primed_followers(followers, *via):
    """Probes on live-history through each of ``via`` in turn, until every follower has read them: then
    each following process reads the Redis Stream, and whatever is published next reaches it."""
    for server in via:
        await primed(lambda n, server=server: publish_via(server, "live-history", {"probe": n, "via": server.url}),
                     [list_receiver(events, probe_of(server)) for events in followers])


def entries(events):
    """Followed events that are not probes."""
    return [event for event in events if not (isinstance(event[2], dict) and "probe" in event[2])]


async def test_publish_in_one_process_reaches_subscribers_in_the_other(cluster):
    a, b, _ = cluster
    on_a, on_b = await subscribed("X1", a, b, via=a)
    await publish_via(a, "live-ticks", {"symbol": "X1", "price": 1})
    assert await receive(on_a) == {"symbol": "X1", "price": 1}
    assert await receive(on_b) == {"symbol": "X1", "price": 1}
    await on_a.close()
    await on_b.close()


async def test_management_command_publishes_to_every_process(cluster):
    a, b, env = cluster
    [on_b] = await subscribed("CMD", b, via=a)
    result = subprocess.run(
        [PYTHON, "manage.py", "publish", "live-ticks", '{"symbol": "CMD", "price": 7}'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert await receive(on_b) == {"symbol": "CMD", "price": 7}
    bad = subprocess.run([PYTHON, "manage.py", "publish", "live-ticks", "{oops"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "not valid JSON" in bad.stderr
    await on_b.close()


SYNC_PUBLISHER = textwrap.dedent("""
    import threading
    import django
    django.setup()
    from tests.liveapp.routing import tick_channel

    tick_channel.publish_sync({"symbol": "SYNC", "n": 1})
    tick_channel.publish_sync({"symbol": "SYNC", "n": 2})  # a second call: no 'Event loop is closed'
    errors = []
    def worker():
        try:
            tick_channel.publish_sync({"symbol": "SYNC", "n": 3})
        except Exception as error:
            errors.append(error)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert not errors, errors
    print("ok")
""")


async def test_synchronous_code_and_worker_threads_can_publish(cluster):
    a, b, env = cluster
    [on_b] = await subscribed("SYNC", b, via=a)
    result = subprocess.run([PYTHON, "-c", SYNC_PUBLISHER], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    assert [(await receive(on_b))["n"] for _ in range(3)] == [1, 2, 3]
    await on_b.close()


async def test_one_redis_subscription_per_process_and_channel_for_200_clients(cluster, redis_server):
    a, b, _ = cluster
    clients = []
    for start in range(0, 200, 20):
        clients += await asyncio.gather(*(
            websockets.connect(f"{(a if i % 2 else b).ws_url}/api/t/channel-ticks/MANY")
            for i in range(start, start + 20)
        ))
    await live_subscribers(a, "live-ticks", 100)
    await live_subscribers(b, "live-ticks", 100)
    group_channel = f"asgi__group__{group_name('live-ticks')}"
    await await_until(lambda: redis_subscriptions(redis_server.client(), group_channel) >= 2, interval=0.05,
                      message="both processes' bridges in the live-ticks group")
    assert dict(redis_server.client().pubsub_numsub(group_channel)) == {group_channel.encode(): 2}
    await publish_via(a, "live-ticks", {"symbol": "MANY", "price": 9})
    received = await asyncio.gather(*(receive(ws) for ws in clients))
    assert received == [{"symbol": "MANY", "price": 9}] * 200
    await asyncio.gather(*(ws.close() for ws in clients))


async def two_entries_followed(reader, publisher) -> list:
    """``{"n": 1}`` and ``{"n": 2}`` published on live-history through ``publisher``, as an SSE follower of
    ``reader`` (primed first, so it reads the stream) saw them: ``(event, id, data)`` each."""
    followed: list = []
    follower = asyncio.create_task(follow(reader, "/api/t/sse/resumable", followed))
    try:
        await primed_followers([followed], publisher)
        await publish_via(publisher, "live-history", {"n": 1}, {"n": 2})
        return (await await_until(lambda: len(entries(followed)) >= 2 and entries(followed), 8))[:2]
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)


async def read_resumable(server, count, last_event_id=None):
    return await read_events(server.url, count, last_event_id)


async def test_resume_across_two_processes_with_redis_stream_ids(cluster):
    a, b, _ = cluster
    seen = await two_entries_followed(a, b)
    assert [d["n"] for _, _, d in seen] == [1, 2]
    await publish_via(a, "live-history", {"n": 3}, {"n": 4}, {"n": 5})
    resumed = await read_resumable(b, 3, last_event_id=seen[-1][1])
    assert [(e, json.loads(d)["n"]) for e, _, d in resumed] == [("entry", 3), ("entry", 4), ("entry", 5)]
    assert all(i > seen[-1][1] for _, i, _ in resumed)


async def test_delivery_resumes_by_itself_after_redis_restarts(cluster, redis_server):
    a, b, _ = cluster
    [on_b] = await subscribed("FLAP", b, via=a)
    await publish_via(a, "live-ticks", {"symbol": "FLAP", "n": 1})
    assert (await receive(on_b))["n"] == 1

    redis_server.stop()
    async with websockets.connect(f"{a.ws_url}/api/t/publish-or-report/live-ticks") as publisher:
        await publisher.send(json.dumps({"symbol": "FLAP", "n": 2}))
        assert (await receive(publisher, timeout=30))["error"] == "broker_unavailable"  # told, not lost silently
    redis_server.start()

    deadline = time.monotonic() + 20
    got = None
    while time.monotonic() < deadline:
        await publish_via(a, "live-ticks", {"symbol": "FLAP", "n": 3})
        try:
            got = await receive(on_b, timeout=1)
            break
        except TimeoutError:
            continue
    assert got == {"symbol": "FLAP", "n": 3}
    assert on_b.state.name == "OPEN"  # the client's connection stayed up throughout
    await on_b.close()
    assert "Redis unreachable" in a.log()
    assert "Traceback" not in a.log() + b.log()  # one line per state change, not a traceback per second


def token_for(server, username):
    from tests.liveapp.management.commands.seed_test_users import PASSWORD

    response = httpx.post(f"{server.url}/api/auth/token/", json={"username": username, "password": PASSWORD})
    response.raise_for_status()
    return response.json()["access"]


async def test_deactivating_a_user_closes_their_connections_in_every_process_within_2s(cluster, redis_server):
    a, b, env = cluster
    token = await asyncio.to_thread(token_for, a, "subscriber")
    ws_a = await websockets.connect(f"{a.ws_url}/api/t/private?token={token}")
    ws_b = await websockets.connect(f"{b.ws_url}/api/t/private?token={token}")
    async with httpx.AsyncClient(timeout=10) as client, client.stream(
        "GET", f"{b.url}/api/t/sse/forever?token={token}"
    ) as sse:
        assert sse.status_code == 200
        body = sse.aiter_text()
        assert "event: open" in await text_until(body, "event: open")
        revocations = layer_group(group_name(CONTROL_CHANNEL))
        await await_until(lambda: redis_subscriptions(redis_server.client(), revocations) == 2, interval=0.05,
                          message="both processes subscribed to the revocations")
        deactivate = ("from django.contrib.auth.models import User; u = User.objects.get(username='subscriber'); "
                      "u.is_active = False; u.save()")
        started = time.monotonic()
        result = await asyncio.to_thread(subprocess.run, [PYTHON, "manage.py", "shell", "-c", deactivate],
                                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        published = time.monotonic()
        codes = []
        for ws in (ws_a, ws_b):
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(2):
                    await ws.recv()
            codes.append((closed.value.rcvd.code, closed.value.rcvd.reason))
        async with asyncio.timeout(2):
            rest = "".join([chunk async for chunk in body])
        assert time.monotonic() - published < 2, time.monotonic() - started
    assert codes == [(4003, "session_revoked")] * 2
    assert '"code":"session_revoked"' in rest


async def test_concurrent_publishers_in_two_processes_give_every_subscriber_one_order(cluster):
    """Both processes, each through ``follow()`` and through a relay (the direct path, a turn's frames in
    one write): the same events, ids and order everywhere."""
    a, b, _ = cluster
    streams = [(a, "/api/t/sse/resumable"), (b, "/api/t/sse/resumable"),
               (a, "/api/t/sse/resumable-relay"), (b, "/api/t/sse/resumable-relay")]
    followed: tuple[list, ...] = tuple([] for _ in streams)
    followers = [asyncio.create_task(follow(server, path, events))
                 for (server, path), events in zip(streams, followed, strict=True)]
    try:
        await primed_followers(followed, a, b)
        await asyncio.gather(
            publish_via(a, "live-history", *({"from": "a", "n": i} for i in range(40))),
            publish_via(b, "live-history", *({"from": "b", "n": i} for i in range(40))),
        )
        seen = [(await await_until(lambda events=events: len(entries(events)) >= 80 and entries(events), 20))[:80]
                for events in followed]
    finally:
        for follower in followers:
            follower.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
    on_a = seen[0]
    assert len(on_a) == 80
    assert all(other == on_a for other in seen[1:])  # the same events in the same order, on either path
    ids = [tuple(map(int, event_id.split("-"))) for _, event_id, _ in on_a]
    assert ids == sorted(ids) and len(set(ids)) == 80  # strictly increasing: a resume point is exact


# -- Redis faults: a publisher is told during an outage; the first publish afterwards reaches everyone --

STREAM_ID = re.compile(r"^\d+-\d+$")

OUTAGE_PUBLISHER = textwrap.dedent("""
    import django
    django.setup()
    from realtime import BrokerUnavailable
    from tests.liveapp.routing import history_channel, tick_channel

    for channel in (tick_channel, history_channel):
        try:
            channel.publish_sync({"symbol": "OUT", "n": -1})
            print("published", channel.name)
        except BrokerUnavailable as error:
            print("refused", channel.name, error.channel)
""")


async def follow(server, path, into):
    """Append ``(event, id, data)`` of an SSE stream to ``into`` until cancelled (no read timeout)."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client, aconnect_sse(
        client, "GET", f"{server.url}{path}"
    ) as source:
        async for event in source.aiter_sse():
            into.append((event.event, event.id, json.loads(event.data)))


async def until(condition, timeout, every=0.2):
    """Wait until ``condition()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(every)


async def receive_where(ws, predicate, timeout):
    """The first message on ``ws`` that satisfies ``predicate`` (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if predicate(message):
                return message


async def place_order(server, token):
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(f"{server.url}/api/trading/orders", json={"symbol": "R_100", "side": "buy",
                                 "amount": "10"}, headers={"Authorization": f"Bearer {token}"})


async def test_outage_is_reported_to_publishers_and_the_first_publish_after_it_reaches_the_other_process(
    cluster, redis_server
):
    a, b, env = cluster
    logs_before = len(a.log()), len(b.log())
    token = await asyncio.to_thread(token_for, a, "plain")  # "subscriber" is deactivated by an earlier test
    on_b = await websockets.connect(f"{b.ws_url}/api/t/channel-ticks/OUT")
    events_on_b: list = []
    follower = asyncio.create_task(follow(b, "/api/t/sse/resumable", events_on_b))
    try:
        # Both of A's pooled connections (layer and Stream) carry a publish that B receives ...
        deadline, ws_warm = time.monotonic() + 30, False
        while not (ws_warm and any(d == {"n": 0} for _, _, d in events_on_b)):
            assert time.monotonic() < deadline and not follower.done(), "B never received the warm-up publish"
            await publish_via(a, "live-ticks", {"symbol": "OUT", "n": 0})
            await publish_via(a, "live-history", {"n": 0})
            try:
                ws_warm = ws_warm or bool(await receive_where(on_b, lambda m: m.get("n") == 0, timeout=1))
            except TimeoutError:
                pass
            await asettled(lambda: any(d == {"n": 0} for _, _, d in events_on_b), bool, 0.2)  # B's stream, a moment
        warm_id = next(i for _, i, d in events_on_b if d == {"n": 0})

        # ... then Redis goes away, and A stays silent on both (its connections go stale).
        redis_server.stop()
        refused = await place_order(a, token)
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"].startswith("application/json")
        assert refused.json()["code"] == "broker_unavailable" and refused.headers["Retry-After"]
        sync = await asyncio.to_thread(subprocess.run, [PYTHON, "-c", OUTAGE_PUBLISHER], cwd=ROOT, env=env,
                                       capture_output=True, text=True, timeout=60)
        assert sync.returncode == 0, sync.stderr
        assert sync.stdout.split("\n")[:2] == ["refused live-ticks live-ticks", "refused live-history live-history"]
        command = await asyncio.to_thread(subprocess.run, [PYTHON, "manage.py", "publish", "live-history", '{"n": -1}'],
                                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert command.returncode == 1 and "Redis is unreachable" in command.stderr, command.stderr

        redis_server.start()  # the same port, empty (no persistence)
        group_channel = f"asgi__group__{group_name('live-ticks')}"
        await until(lambda: dict(redis_server.client().pubsub_numsub(group_channel))[group_channel.encode()] >= 1,
                    30)  # B's layer subscription is back: what A publishes now must reach it

        # The first publish from A after the restart, on each path, reaches B.
        await publish_via(a, "live-ticks", {"symbol": "OUT", "n": 1})
        assert await receive_where(on_b, lambda m: m.get("n") != 0, timeout=15) == {"symbol": "OUT", "n": 1}
        await publish_via(a, "live-history", {"n": 1})
        await until(lambda: any(d != {"n": 0} for _, _, d in events_on_b) or follower.done(), 30)
        after = [(e, i, d) for e, i, d in events_on_b if d != {"n": 0}]
        assert [(e, d) for e, _, d in after] == [("entry", {"n": 1})]
        new_id = after[0][1]
        assert STREAM_ID.match(new_id) and tuple(map(int, new_id.split("-"))) > tuple(map(int, warm_id.split("-")))
        stored = redis_server.client().xrange(history_key("live-history"))
        assert [entry_id.decode() for entry_id, _ in stored] == [new_id]  # in the history, once

        placed = await place_order(a, token)
        assert placed.status_code == 201, placed.text
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await on_b.close()
        if redis_server.process.poll() is not None:
            redis_server.start()
    new_logs = a.log()[logs_before[0]:] + b.log()[logs_before[1]:]
    assert "Traceback" not in new_logs
    assert "Redis unreachable" in new_logs


# -- the same in one process, against a Redis of the test's own ---------------------------------------


@pytest.fixture
def own_redis(tmp_path, settings):
    """A redis-server for one test, with the settings pointing the layer and the history at it."""
    require(which("redis-server") is not None, "redis-server")
    server = RedisServer(tmp_path).start()
    settings.REDIS_URL = server.url
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": [server.url]}}
    }
    try:
        yield server
    finally:
        server.stop()


async def restart(server):
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)


async def test_first_publish_after_a_restart_goes_out_on_a_reconnected_connection(own_redis):
    from channels.layers import get_channel_layer
    from redis import asyncio as aioredis

    live, history = Channel("unit-restart-live"), Channel("unit-restart-history", history=10)
    await live.publish({"n": 0})  # both pooled connections are now in use ...
    await history.publish({"n": 0})
    await restart(own_redis)  # ... and stale

    observer = aioredis.Redis.from_url(own_redis.url).pubsub()
    await observer.subscribe(f"asgi__group__{live.group}")
    try:
        await live.publish({"n": 1})
        async with asyncio.timeout(10):
            while (message := await observer.get_message(ignore_subscribe_messages=True, timeout=1)) is None:
                pass
        assert get_channel_layer().deserialize(message["data"])["m"] == {"n": 1}
    finally:
        await observer.aclose()
    await history.publish({"n": 1})
    stored = await aioredis.Redis.from_url(own_redis.url).xrange(history_key("unit-restart-history"))
    assert [json.loads(fields[b"m"]) for _, fields in stored] == [{"n": 1}]
    assert live.broker_errors == history.broker_errors == 0


async def test_publish_while_redis_is_down_raises_and_reaches_no_subscriber(own_redis, caplog):
    live, history = Channel("unit-down-live"), Channel("unit-down-history", history=10)
    await live.publish({"n": 0})
    await history.publish({"n": 0})  # the broker is up: its state says so
    queues = [await live.subscribe_queue(), await history.subscribe_queue()]
    caplog.clear()
    await asyncio.to_thread(own_redis.stop)
    try:
        for channel in (live, history):
            with pytest.raises(BrokerUnavailable) as refused:
                await channel.publish({"n": 1})
            assert refused.value.channel == channel.name and "published to nobody" in str(refused.value)
            with pytest.raises(BrokerUnavailable):
                await asyncio.to_thread(channel.publish_sync, {"n": 2})  # from a worker thread
            assert channel.broker_errors == 2
        await asyncio.sleep(0.3)  # time under test: nothing arrives within it
        assert [q.qsize() for q in queues] == [0, 0]  # not even the local subscribers got it
        unreachable = [r for r in caplog.records if r.name == "realtime.broker" and "unreachable" in r.message]
        assert len(unreachable) == 1  # one line for the state change, not one per failure

        await asyncio.to_thread(own_redis.start)
        assert await live.publish({"n": 3}) == 1
        assert (await asyncio.wait_for(queues[0].get(), 10)) == {"n": 3}
        await history.publish({"n": 3})
        assert (await asyncio.wait_for(queues[1].get(), 15)) == {"n": 3}  # the Stream reader found Redis again
        assert [r.message for r in caplog.records if "reachable again" in r.message][:1]
    finally:
        await live.unsubscribe_queue(queues[0])
        await history.unsubscribe_queue(queues[1])


async def test_memory_history_keeps_no_entry_for_a_refused_publish(own_redis, settings):
    settings.REDIS_URL = None  # the history in this process; the layer still on Redis
    channel = Channel("unit-memory-history", history=10)
    assert await channel.publish({"n": 1}) == 0
    await asyncio.to_thread(own_redis.stop)
    with pytest.raises(BrokerUnavailable):
        await channel.publish({"n": 2})
    replay, recovered = await channel.replay_after("0")
    assert [(seq(i), m) for i, m in replay] == [(1, {"n": 1})] and recovered


async def test_a_revocation_during_an_outage_still_closes_this_process_connections(own_redis):
    from realtime.revocation import Revocations

    revocations, closed = Revocations(), []
    unregister = revocations.register(42, lambda: closed.append("ws"))
    try:
        await asyncio.to_thread(own_redis.stop)
        await revocations.revoke(42, "logout")
        await asyncio.to_thread(revocations.revoke_sync, 42, "user_deactivated")
        assert closed == ["ws", "ws"]
    finally:
        unregister()


# -- resuming on Redis history: what a Redis that forgot cannot vouch for ------------------------------


async def redis_history(name, size=10):
    from realtime.pubsub.history import RedisHistory
    from realtime.pubsub.redis import redis_url

    return RedisHistory(redis_url(), name, size)


async def test_redis_history_answers_recovered_false_after_a_restart_a_flush_or_for_a_future_id(own_redis):
    from realtime.pubsub import ids

    history = await redis_history("unit-forgets")
    held = [await history.append({"n": n}) for n in range(3)]
    assert await history.after(held[0]) == ([(held[1], {"n": 1}), (held[2], {"n": 2})], True)

    await restart(own_redis)  # no persistence: the stream is gone
    assert await history.after(held[-1]) == ([], False)
    fresh = [await history.append({"n": n}) for n in range(5)]
    replay, recovered = await history.after(held[-1])
    assert (replay, recovered) == ([(i, {"n": n}) for n, i in enumerate(fresh)], False)

    own_redis.client().flushdb()
    assert await history.after(fresh[-1]) == ([], False)
    again = await history.append({"n": 9})
    assert await history.after(fresh[-1]) == ([(again, {"n": 9})], False)

    newest = ids.parse(again)
    for future in (ids.make(newest[0] + 60_000, 0), ids.make(newest[0], newest[1] + 1)):
        assert await history.after(future) == ([(again, {"n": 9})], False), future
    assert await history.after(again) == ([], True)


async def test_the_start_means_the_same_on_redis_as_in_memory(own_redis):
    """``"0"``: everything held, recovered while nothing was trimmed away (or nothing was ever published)."""
    history = await redis_history("unit-start", size=3)
    for start in ("0", "0-0"):
        assert await history.after(start) == ([], True)
    made = [await history.append(n) for n in range(3)]
    for start in ("0", "0-0"):
        assert await history.after(start) == (list(zip(made, range(3), strict=True)), True)
    made.append(await history.append(3))  # MAXLEN 3: the first one is trimmed away
    for start in ("0", "0-0"):
        assert await history.after(start) == (list(zip(made[1:], range(1, 4), strict=True)), False)


async def test_a_memory_id_is_never_a_position_in_a_redis_stream(own_redis):
    """A deployment that moves from memory to Redis history: the old ids answer recovered false."""
    from realtime.pubsub.history import MemoryHistory

    history = await redis_history("unit-moved")
    stored = await history.append("x")
    memory = MemoryHistory(10)
    old = memory.append("y")
    assert await history.after(old) == ([(stored, "x")], False)
    assert memory.after(stored) == ([(old, "y")], False)


async def test_a_resume_misses_nothing_published_while_the_stream_reader_starts(own_redis, monkeypatch):
    """The reader's first position and the replay can race: a message published between the replay and
    the reader's first ``last_id`` would be in neither. The replay waits for the reader's position."""
    channel = Channel("unit-reader-start", history=10)
    _, resume_from = await channel.publish_with_id({"n": 0})
    store = channel.transport().store
    gate, replayed = asyncio.Event(), asyncio.Event()
    last_id, after = store.last_id, store.after

    async def slow_last_id():
        await gate.wait()  # the reader's first command, held back
        return await last_id()

    async def observed_after(value):
        try:
            return await after(value)
        finally:
            replayed.set()

    monkeypatch.setattr(store, "last_id", slow_last_id)
    monkeypatch.setattr(store, "after", observed_after)
    subscription = channel.subscribe(last_id=resume_from, with_ids=True)
    following = asyncio.ensure_future(anext(subscription))
    try:
        # Without the wait, the replay is read at once (and holds nothing new); with it, it waits for the gate.
        await asyncio.wait([asyncio.ensure_future(replayed.wait())], timeout=1)
        await channel.publish({"n": 1})
        gate.set()
        message_id, message = await asyncio.wait_for(following, 10)
        assert message == {"n": 1} and message_id != resume_from
    finally:
        following.cancel()
        subscription.close()


async def test_a_subscriber_told_it_is_listening_hears_a_publish_in_another_process_at_once(own_redis, monkeypatch):
    """``Channel.listening()`` waits for this process's ``group_add``: another process's publish right
    after it (a client's publish after its subscribe reply, served elsewhere) reaches the subscriber
    even when joining the group is slow. Without the wait, that ``group_send`` found the group
    without this process and was lost."""
    import uuid

    from channels.layers import get_channel_layer
    from channels_redis.pubsub import RedisPubSubChannelLayer

    from realtime.pubsub.layer import MESSAGE_TYPE

    layer = get_channel_layer()
    join = layer.group_add

    async def slow_group_add(group, channel_name):
        await asyncio.sleep(0.3)  # a busy Redis or connection pool: the membership comes late
        return await join(group, channel_name)

    monkeypatch.setattr(layer, "group_add", slow_group_add)
    channel = Channel(f"layer-listening-{uuid.uuid4().hex[:8]}")
    elsewhere = RedisPubSubChannelLayer(hosts=[own_redis.url])  # another process's layer
    event = {"type": MESSAGE_TYPE, "m": {"n": 1}, "i": None, "o": "another-process"}
    try:
        await heard_after_listening(channel, lambda: elsewhere.group_send(channel.group, event), [{"n": 1}])
    finally:
        await elsewhere.flush()
