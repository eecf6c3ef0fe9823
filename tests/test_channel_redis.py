"""Channel across two real daphne processes and a real redis-server started by these tests."""

import asyncio
import json
import subprocess
import textwrap
import time

import httpx
import pytest
import redis
import websockets
from websockets.exceptions import ConnectionClosed

from realtime.channel import group_name
from tests.servers import PYTHON, ROOT, Daphne, free_port, prepare_database, require, stop, wait_for_port, which
from tests.sse_client import read_events, text_until

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


async def subscribed(server, symbol):
    ws = await websockets.connect(f"{server.ws_url}/api/t/channel-ticks/{symbol}")
    await asyncio.sleep(0.3)  # the bridge joins the group
    return ws


async def test_publish_in_one_process_reaches_subscribers_in_the_other(cluster):
    a, b, _ = cluster
    on_a, on_b = await subscribed(a, "X1"), await subscribed(b, "X1")
    await publish_via(a, "live-ticks", {"symbol": "X1", "price": 1})
    assert await receive(on_a) == {"symbol": "X1", "price": 1}
    assert await receive(on_b) == {"symbol": "X1", "price": 1}
    await on_a.close()
    await on_b.close()


async def test_management_command_publishes_to_every_process(cluster):
    _, b, env = cluster
    on_b = await subscribed(b, "CMD")
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
    _, b, env = cluster
    on_b = await subscribed(b, "SYNC")
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
    await asyncio.sleep(0.5)
    group_channel = f"asgi__group__{group_name('live-ticks')}"
    assert dict(redis_server.client().pubsub_numsub(group_channel)) == {group_channel.encode(): 2}
    await publish_via(a, "live-ticks", {"symbol": "MANY", "price": 9})
    received = await asyncio.gather(*(receive(ws) for ws in clients))
    assert received == [{"symbol": "MANY", "price": 9}] * 200
    await asyncio.gather(*(ws.close() for ws in clients))


async def read_resumable(server, count, last_event_id=None):
    return await read_events(server.url, count, last_event_id)


async def test_resume_across_two_processes_with_redis_stream_ids(cluster):
    a, b, _ = cluster
    reader = asyncio.create_task(read_resumable(a, 2))
    await asyncio.sleep(0.5)
    await publish_via(b, "live-history", {"n": 1}, {"n": 2})
    seen = await reader
    assert [json.loads(d)["n"] for _, _, d in seen] == [1, 2]
    await publish_via(a, "live-history", {"n": 3}, {"n": 4}, {"n": 5})
    resumed = await read_resumable(b, 3, last_event_id=seen[-1][1])
    assert [(e, json.loads(d)["n"]) for e, _, d in resumed] == [("entry", 3), ("entry", 4), ("entry", 5)]
    assert all(i > seen[-1][1] for _, i, _ in resumed)


async def test_delivery_resumes_by_itself_after_redis_restarts(cluster, redis_server):
    a, b, _ = cluster
    on_b = await subscribed(b, "FLAP")
    await publish_via(a, "live-ticks", {"symbol": "FLAP", "n": 1})
    assert (await receive(on_b))["n"] == 1

    redis_server.stop()
    await publish_via(a, "live-ticks", {"symbol": "FLAP", "n": 2})  # lost for B: Redis is away
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


async def test_deactivating_a_user_closes_their_connections_in_every_process_within_2s(cluster):
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
        await asyncio.sleep(0.3)
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
    a, b, _ = cluster
    readers = [asyncio.create_task(read_events(server.url, 80, timeout=20)) for server in (a, b)]
    await asyncio.sleep(0.5)
    await asyncio.gather(
        publish_via(a, "live-history", *({"from": "a", "n": i} for i in range(40))),
        publish_via(b, "live-history", *({"from": "b", "n": i} for i in range(40))),
    )
    on_a, on_b = await asyncio.gather(*readers)
    assert len(on_a) == len(on_b) == 80
    assert on_a == on_b  # the same events in the same order on both processes
    ids = [tuple(map(int, event_id.split("-"))) for _, event_id, _ in on_a]
    assert ids == sorted(ids) and len(set(ids)) == 80  # strictly increasing: a resume point is exact
