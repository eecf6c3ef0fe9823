"""A resume that never lies, on a real daphne: ids from before a restart are not recovered.

Memory history across a daphne restart (SIGTERM, then a new process: a new epoch), and Redis history
across a restart of a Redis without persistence. On each, a ``TopicSocket`` subscribe with the old
``last_id``, a WebSocketView resuming through ``Channel.subscribe(last_id=...)``, an SSE ``follow()``
and an SSE relay with the old ``Last-Event-ID`` are told they were not recovered (``recovered:
false`` and a gap, ``event: reset``), then get every message after the restart exactly once.
(``relay = channel`` WebSocket views have no resume: their frames carry no id.) The endpoints are
tests/wireapp's (``wt:`` topics, the ``wire-fanout`` channel).
"""

import asyncio
import json
from dataclasses import dataclass

import pytest
import websockets

from realtime.pubsub import ids
from tests.history_ids import epoch
from tests.servers import Daphne, prepare_database, require, which
from tests.sse_client import read_events
from tests.test_channel_redis import RedisServer
from tests.test_topics_live import opened, receive, request, script
from tests.waiting import wire_subscribers

pytestmark = pytest.mark.timeout(180)

TOPIC = "wt:epoch"
FOLLOW, RELAY = "/api/w/fanout-events", "/api/w/relay-events"


@dataclass
class Backend:
    history: str
    server: Daphne
    redis: RedisServer | None

    async def restart(self) -> None:
        """Restart what holds the history: the daphne (memory history), or the Redis (no persistence)."""
        if self.redis is None:
            await asyncio.to_thread(self.server.stop)  # SIGTERM
            await asyncio.to_thread(self.server.start)
        else:
            await asyncio.to_thread(self.redis.stop)
            await asyncio.to_thread(self.redis.start)


@pytest.fixture(scope="module", params=["memory", "redis"])
def backend(request, tmp_path_factory, output_dir):
    extra = {"DJANGO_SETTINGS_MODULE": "tests.wire_settings"}
    redis = None
    if request.param == "redis":
        require(which("redis-server") is not None, "redis-server")
        redis = RedisServer(tmp_path_factory.mktemp("resume-redis")).start()
        extra["REDIS_URL"] = redis.url
    env, _ = prepare_database(tmp_path_factory.mktemp(f"resume-{request.param}"), extra)
    server = Daphne(env, output_dir / f"daphne-resume-{request.param}.log").start()
    try:
        yield Backend(request.param, server, redis)
    finally:
        server.stop()
        if redis is not None:
            redis.stop()


async def publish_fanout(server, prefix, count):
    """``count`` messages ``{"n": i, "p": prefix}`` on wire-fanout (tests.wireapp.routing.Publish)."""
    async with websockets.connect(f"{server.ws_url}/api/w/publish") as ws:
        await ws.send(json.dumps({"count": count, "size": 0, "prefix": prefix, "pause": 0}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 30)) == {"published": count}


async def topic_resume(server, last_id):
    """Subscribe to TOPIC with ``last_id``: the reply's data, and the socket (replay still to read)."""
    ws = await opened(server, "/api/w/topics")
    answer = await request(ws, {"op": "subscribe", "ref": "r", "channel": TOPIC, "last_id": last_id})
    assert answer["ok"], answer
    return answer["data"], ws


async def test_a_resume_from_before_the_restart_is_not_recovered_and_misses_nothing_after_it(backend):
    server = backend.server
    await script(server, channels=[TOPIC], count=3, size=0, pause=0)
    await publish_fanout(server, "before", 3)

    # What a client held before the restart: the three ids, read from the start ("0": everything).
    data, ws = await topic_resume(server, "0")
    assert data["recovered"] is True, data
    held = [await receive(ws) for _ in range(3)]
    await ws.close()
    topic_last = held[-1]["id"]
    assert [m["data"]["n"] for m in held] == [0, 1, 2] and data["last_id"] == topic_last
    sse = {path: await read_events(server.url, 3, "0", path=path) for path in (FOLLOW, RELAY)}
    for path, events in sse.items():
        assert [(e, json.loads(d)["p"]) for e, _, d in events] == [("m", "before")] * 3, (path, events)
    sse_last = sse[FOLLOW][-1][1]
    assert sse[RELAY][-1][1] == sse_last

    await backend.restart()
    await script(server, channels=[TOPIC], count=5, size=0, pause=0)
    await publish_fanout(server, "after", 5)

    # The TopicSocket: told it was not recovered, then the five messages since the restart, once.
    data, ws = await topic_resume(server, topic_last)
    assert data["recovered"] is False, data
    assert await receive(ws) == {"op": "gap", "channel": TOPIC, "missed": None, "recovered": False}
    replay = [await receive(ws) for _ in range(5)]
    assert [m["data"]["n"] for m in replay] == [0, 1, 2, 3, 4]
    assert len({m["id"] for m in replay}) == 5 and topic_last not in {m["id"] for m in replay}
    assert data["last_id"] == replay[-1]["id"]
    if backend.redis is None:
        assert epoch(replay[0]["id"]) != epoch(topic_last), "a new process, a new epoch"
    await script(server, channels=[TOPIC], count=1, size=0, pause=0)  # live after the replay: once
    assert (await receive(ws))["data"]["n"] == 0
    with pytest.raises(TimeoutError):
        await receive(ws, timeout=0.5)
    await ws.close()

    # A WebSocketView of the project's own that resumes with Channel.subscribe(last_id=...): the same.
    async with websockets.connect(f"{server.ws_url}/api/w/resumable-fanout?last_id={sse_last}") as ws:
        frames = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(6)]
    assert frames[0] == {"gap": None}
    assert [(f["m"]["p"], f["m"]["n"]) for f in frames[1:]] == [("after", n) for n in range(5)]
    assert len({f["id"] for f in frames[1:]}) == 5 and sse_last not in {f["id"] for f in frames[1:]}

    # SSE, by follow() and by the relay: event: reset, then the five messages since the restart, once.
    for path in (FOLLOW, RELAY):
        events = await read_events(server.url, 6, sse_last, path=path)
        assert events[0][0] == "reset" and json.loads(events[0][2]) == {"missed": None, "last_id": sse_last}, path
        assert [(e, json.loads(d)["p"], json.loads(d)["n"]) for e, _, d in events[1:]] == [
            ("m", "after", n) for n in range(5)
        ], path
        assert len({i for _, i, _ in events[1:]}) == 5 and sse_last not in {i for _, i, _ in events}


async def test_a_current_id_still_resumes_exactly_after_the_restart(backend):
    """The same ids, taken after the restart, are recovered: only what came after them is replayed."""
    server = backend.server
    data, ws = await topic_resume(server, "0")
    newest = data["last_id"]
    await ws.close()
    await script(server, channels=[TOPIC], count=2, size=0, pause=0)
    data, ws = await topic_resume(server, newest)
    assert data["recovered"] is True, data
    assert [(await receive(ws))["data"]["n"] for _ in range(2)] == [0, 1]
    await ws.close()
    follow = await read_events(server.url, 1, "0", path=FOLLOW)
    first = follow[-1][1] if follow[0][0] != "reset" else (await read_events(server.url, 2, "0", path=FOLLOW))[1][1]
    for path in (FOLLOW, RELAY):
        events = await read_events(server.url, 1, first, path=path)
        assert events[0][0] == "m" and ids.parse(events[0][1]) > ids.parse(first), (path, events)


async def test_subscribers_of_the_restarted_server_are_gone(backend):
    """Nothing of these tests outlives its connection on the restarted server."""
    await wire_subscribers(backend.server, 0)
