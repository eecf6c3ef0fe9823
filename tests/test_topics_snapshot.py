"""State on subscribe: a topic's snapshot in the subscribe reply, then exactly the messages after its id.

The seam is tested from a table; the promise (no gap, no duplicate) against a real daphne that
publishes in a loop while clients subscribe, with the history in memory and in a Redis Stream (whose
deliveries come from a reader that lags the stream, so live copies older than a snapshot do arrive).
"""

import asyncio
import json
import uuid

import pytest
import websockets

from realtime import Snapshot, Topic
from realtime.pubsub.delivery import Seam
from realtime.pubsub.history import id_order
from tests.isolation import redis_db
from tests.servers import Daphne, prepare_database, redis_available, require

pytestmark = pytest.mark.timeout(240)
WS = "/api/t14/ws"


@pytest.mark.parametrize("message_id, key", [
    ("7", (7,)), ("1732550000000-3", (1732550000000, 3)), ("0", (0,)),
    ("", None), ("7-", None), ("-1", None), ("x", None), (None, None), ("1" * 21, None),
])
def test_history_ids_order_as_their_numbers(message_id, key):
    assert id_order(message_id) == key


@pytest.mark.parametrize("through, replayed, arriving, held", [
    # The snapshot is current to 5: a live copy of 4 or 5 is in it; 6 was replayed; 7 is new.
    ("5", ["6"], ["4", "5", "6", "7"], ["4", "5", "6"]),
    ("9-2", [], ["9-1", "9-2", "9-3", "10-0"], ["9-1", "9-2"]),
    ("12", ["13", "14"], ["15"], []),
    (None, ["1"], ["1", "2"], ["1"]),  # no snapshot: the replay's ids only
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
    env, _ = prepare_database(tmp_path_factory.mktemp(f"snapshot-{request.param}"), extra)
    daphne = Daphne(env, output_dir / f"daphne-snapshot-{request.param}.log").start()
    yield daphne
    daphne.stop()


async def receive(ws, timeout=30):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def subscriber(server, channel, total):
    """Subscribe, then read until the publisher's last value: the reply, the values and the message ids."""
    ws = await websockets.connect(f"{server.ws_url}{WS}", subprotocols=["realtime.v1"], max_queue=None)
    try:
        await ws.send(json.dumps({"op": "subscribe", "ref": "s", "channel": channel}))
        reply = await receive(ws)
        assert reply["ok"], reply
        snapshot = reply["data"]["snapshot"]
        values, ids = list(snapshot["data"]), []
        while not values or values[-1] != total:
            frame = await receive(ws)
            assert frame["op"] == "message", frame  # no gap: the history holds the whole burst
            values.append(frame["data"])
            ids.append(frame["id"])
        return reply["data"], values, ids
    finally:
        await ws.close()


async def test_snapshot_and_the_messages_after_it_are_the_publishers_sequence_under_concurrent_publishes(server):
    total, chains, per_chain = 3000, 4, 8
    name = f"burst-{uuid.uuid4().hex[:8]}"
    channel = f"tally:{name}"
    publisher = await websockets.connect(f"{server.ws_url}/api/t14/burst", max_queue=None)
    await publisher.send(json.dumps({"name": name, "count": total}))

    async def chain():  # one subscriber after another, so they join all along the burst
        return [await subscriber(server, channel, total) for _ in range(per_chain)]

    results = [result for found in await asyncio.gather(*(chain() for _ in range(chains))) for result in found]
    ids = (await receive(publisher, 60))["ids"]
    await publisher.close()

    assert len(ids) == total and len(set(ids)) == total
    expected = list(range(1, total + 1))
    for data, values, message_ids in results:
        taken = len(data["snapshot"]["data"])
        assert values == expected, (taken, values[max(0, taken - 3):taken + 3])  # nothing missing or twice
        assert data["snapshot"]["last_id"] == (ids[taken - 1] if taken else None)
        assert message_ids == ids[taken:]  # the messages after the snapshot are the ones published after it
        assert data["recovered"] is True
    partial = [data for data, _, _ in results if 0 < len(data["snapshot"]["data"]) < total]
    assert len(partial) >= chains, "the subscribers joined before or after the burst, not during it"


async def test_a_topic_without_a_snapshot_replies_as_before(server):
    ws = await websockets.connect(f"{server.ws_url}{WS}", subprotocols=["realtime.v1"])
    await ws.send(json.dumps({"op": "subscribe", "ref": "s", "channel": "open:no-snapshot"}))
    reply = await receive(ws)
    assert reply["ok"] and "snapshot" not in reply["data"]
    await ws.close()
