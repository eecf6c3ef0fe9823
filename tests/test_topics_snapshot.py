"""State on subscribe: a topic's snapshot in the subscribe reply, then exactly the messages after its id.

The seam is tested from a table; the promise (no gap, no duplicate) against a real daphne that
publishes in a loop while clients subscribe, with the history in memory and in a Redis Stream (whose
deliveries come from a reader that lags the stream, so live copies older than a snapshot do arrive).
"""

import asyncio
import json
import uuid

import pytest
import redis
import websockets

from realtime import Snapshot, Topic
from realtime.pubsub.delivery import Seam
from tests.isolation import redis_db
from tests.servers import Daphne, prepare_database, redis_available, require

pytestmark = pytest.mark.timeout(240)
WS = "/api/t14/ws"


@pytest.mark.parametrize("through, replayed, arriving, held", [
    # The snapshot is current to 9-5: a live copy of 9-4 or 9-5 is in it; 9-6 was replayed; 9-7 is new.
    ("9-5", ["9-6"], ["9-4", "9-5", "9-6", "9-7"], ["9-4", "9-5", "9-6"]),
    ("1732550000000-2", [], ["1732550000000-1", "1732550000000-2", "1732550000000-3", "1732550000001-0"],
     ["1732550000000-1", "1732550000000-2"]),
    ("9-12", ["9-13", "9-14"], ["9-15"], []),
    # Redis: the snapshot's millisecond is later than the live copies' (CI sent 2..8 twice after 8).
    ("1732550000007-0", [], ["1732550000002-0", "1732550000006-3", "1732550000007-0", "1732550000008-0"],
     ["1732550000002-0", "1732550000006-3", "1732550000007-0"]),
    ("9-5", [], ["10-1", "5", "x"], []),  # a later epoch (after a restart), or no id of a history
    (None, ["9-1"], ["9-1", "9-2"], ["9-1"]),  # no snapshot: the replay's ids only
])
def test_a_seam_holds_the_replay_and_everything_up_to_the_snapshot(through, replayed, arriving, held):
    seam = Seam(replayed, through)
    assert [message_id for message_id in arriving if message_id in seam] == held


def test_a_topic_with_a_snapshot_needs_history():
    with pytest.raises(TypeError, match="defines snapshot\\(\\) but keeps no history: set history = N"):
        class Forgetful(Topic):
            pattern = "forgetful"

            async def snapshot(self, user, **params):
                return Snapshot([], None)


# -- against daphne ------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(request, tmp_path_factory, output_dir):
    """A daphne serving tests/topicsapp, with the history in memory or in a Redis Stream."""
    extra = {}
    if request.param == "redis":
        require(redis_available(), "Redis at 127.0.0.1:6379")
        extra = {"REDIS_URL": f"redis://127.0.0.1:6379/{redis_db()}"}
        # This run's own database: what an earlier run left on snap:stale would be replayed here.
        redis.Redis.from_url(extra["REDIS_URL"]).flushdb()
    env, _ = prepare_database(tmp_path_factory.mktemp(f"snapshot-{request.param}"), extra)
    daphne = Daphne(env, output_dir / f"daphne-snapshot-{request.param}.log").start()
    yield daphne
    daphne.stop()


async def receive(ws, timeout=30):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def joined(server, channel):
    """A socket subscribed to ``channel``, and its reply's data."""
    ws = await websockets.connect(f"{server.ws_url}{WS}", subprotocols=["realtime.v1"], max_queue=None)
    await ws.send(json.dumps({"op": "subscribe", "ref": "s", "channel": channel}))
    reply = await receive(ws)
    assert reply["ok"], reply
    return ws, reply["data"]


async def values_until_the_end(ws, data):
    """The snapshot's values then the messages' up to the publisher's end mark (0), and the message ids."""
    values, ids = list(data["snapshot"]["data"]), []
    try:
        while not values or values[-1] != 0:
            frame = await receive(ws)
            assert frame["op"] == "message", frame  # no gap: the history holds the whole burst
            values.append(frame["data"])
            ids.append(frame["id"])
    finally:
        await ws.close()
    return values, ids


async def test_snapshot_and_the_messages_after_it_are_the_publishers_sequence_under_concurrent_publishes(server):
    chains, per_chain = 4, 8
    name = f"burst-{uuid.uuid4().hex[:8]}"
    channel = f"tally:{name}"
    publisher = await websockets.connect(f"{server.ws_url}/api/t14/burst", max_queue=None)
    await publisher.send(json.dumps({"name": name}))

    async def chain():  # one subscriber after another, all while the publisher runs
        return [await joined(server, channel) for _ in range(per_chain)]

    subscribers = [found for each in await asyncio.gather(*(chain() for _ in range(chains))) for found in each]
    await publisher.send(json.dumps({"stop": True}))
    ids = (await receive(publisher, 60))["ids"]
    await publisher.close()
    results = await asyncio.gather(*(values_until_the_end(ws, data) for ws, data in subscribers))

    assert len(set(ids)) == len(ids)
    expected = [*range(1, len(ids)), 0]
    for (_, data), (values, message_ids) in zip(subscribers, results, strict=True):
        taken = len(data["snapshot"]["data"])
        assert values == expected, (taken, values[max(0, taken - 3):taken + 3])  # nothing missing or twice
        assert data["snapshot"]["last_id"] == (ids[taken - 1] if taken else None)
        assert message_ids == ids[taken:]  # the messages after the snapshot are the ones published after it
        assert data["recovered"] is True
    partial = [data for _, data in subscribers if data["snapshot"]["data"]]
    assert len(partial) >= len(subscribers) - chains, "the subscribers joined before the burst, not during it"


async def test_a_topic_without_a_snapshot_replies_as_before(server):
    ws = await websockets.connect(f"{server.ws_url}{WS}", subprotocols=["realtime.v1"])
    await ws.send(json.dumps({"op": "subscribe", "ref": "s", "channel": "open:no-snapshot"}))
    reply = await receive(ws)
    assert reply["ok"] and "snapshot" not in reply["data"]
    await ws.close()


async def test_the_python_client_yields_the_snapshot_then_the_messages_after_it(server):
    from realtime.client import Message, Realtime
    from realtime.client import Snapshot as SnapshotEvent

    name = f"client-{uuid.uuid4().hex[:8]}"
    publisher = await websockets.connect(f"{server.ws_url}/api/t14/burst", max_queue=None)
    await publisher.send(json.dumps({"name": name}))
    events = []
    async with Realtime(server.ws_url + WS, backoff=(0.1, 1.0), timeout=30) as rt:
        subscription = await rt.subscribe(f"tally:{name}")
        await publisher.send(json.dumps({"stop": True}))
        async for event in subscription:
            events.append(event)
            if isinstance(event, Message) and event.data == 0:
                break
    ids = (await receive(publisher, 60))["ids"]
    await publisher.close()
    snapshot, messages = events[0], events[1:]
    assert isinstance(snapshot, SnapshotEvent) and all(isinstance(event, Message) for event in messages)
    assert snapshot.data + [event.data for event in messages] == [*range(1, len(ids)), 0]
    assert [event.id for event in messages] == ids[len(snapshot.data):]
    assert snapshot.last_id == (ids[len(snapshot.data) - 1] if snapshot.data else None)


async def request(ws, frame):
    await ws.send(json.dumps(frame))
    return await receive(ws)


async def test_a_refusing_or_broken_snapshot_hook_is_an_error_reply_and_the_connection_goes_on(server):
    ws = await websockets.connect(f"{server.ws_url}{WS}", subprotocols=["realtime.v1"])
    denied = await request(ws, {"op": "subscribe", "ref": "1", "channel": "snap:deny"})
    assert denied["error"] == {"code": "forbidden", "detail": "No state for you"}
    broken = await request(ws, {"op": "subscribe", "ref": "2", "channel": "snap:bad"})
    assert broken["error"]["code"] == "internal_error"
    none = await request(ws, {"op": "subscribe", "ref": "3", "channel": "snap:none"})
    assert none["ok"] and "snapshot" not in none["data"]
    for ref, channel in (("4", "snap:deny"), ("5", "snap:bad")):  # nothing of the failed joins is left
        assert (await request(ws, {"op": "unsubscribe", "ref": ref, "channel": channel}))["error"]["code"] \
            == "not_subscribed"
    await ws.close()


async def test_a_snapshot_history_cannot_continue_is_asked_again_then_replied_unrecovered_with_a_gap(server):
    ws = await websockets.connect(f"{server.ws_url}{WS}", subprotocols=["realtime.v1"])
    publisher = await websockets.connect(f"{server.ws_url}{WS}", subprotocols=["realtime.v1"])
    assert (await request(publisher, {"op": "subscribe", "ref": "s", "channel": "snap:stale"}))["ok"]
    for n in range(6):  # the history keeps 3: the snapshot's id is long gone
        await publisher.send(json.dumps({"op": "publish", "ref": f"p{n}", "channel": "snap:stale", "data": n}))
    answers = [await receive(publisher) for _ in range(12)]  # six replies and six messages, in some order
    assert sum(1 for answer in answers if answer["op"] == "reply" and answer["ok"]) == 6
    reply = await request(ws, {"op": "subscribe", "ref": "1", "channel": "snap:stale"})
    assert reply["data"]["recovered"] is False
    assert reply["data"]["snapshot"]["data"] == "attempt 3"
    assert await receive(ws) == {"op": "gap", "channel": "snap:stale", "missed": None, "recovered": False}
    replayed = [await receive(ws) for _ in range(3)]  # what the history still holds
    assert [frame["data"] for frame in replayed] == [3, 4, 5]
    await ws.close()
    await publisher.close()
