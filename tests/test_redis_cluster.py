"""Two daphne processes over a Redis Cluster of our own (3 masters, 3 replicas): REDIS_URL is
``redis+cluster://...``, the channel layer is realtime.pubsub.sharded.RedisClusterChannelLayer.

Publishes cross processes, presence is one member per user across both, history resumes, and after
SIGKILL of a master (its replica promoted within ``cluster-node-timeout``) every publish reaches every
subscriber in every process and a resume is complete or says ``reset``. The servers run
tests/eventsapp's lifecycle receivers too (tests.events_settings), so lifecycle events are decided
and delivered once on the cluster. Never the shared Redis.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from realtime.events import stream as lifecycle
from realtime.events.signals import PRESENCE_NAMES
from realtime.pubsub.channel import group_name
from realtime.pubsub.history import key as history_key
from realtime.topics.presence import COMPANION, counts_key
from tests.redis_cluster import RedisCluster
from tests.servers import Daphne, prepare_database
from tests.sse_client import read_events
from tests.test_channel_redis import (
    entries,
    follow,
    primed_followers,
    publish_via,
    receive,
    subscribed,
    two_entries_followed,
)
from tests.test_lifecycle_live import of
from tests.test_topics_live import member_socket, opened, request, token_from, until
from tests.waiting import asettled, await_until, primed, settled, ws_receiver


async def resume_until(server, last_id, last_n, timeout=10.0):
    """Events of the resumable stream after ``last_id`` until the entry ``{"n": last_n}``."""
    import httpx
    from httpx_sse import aconnect_sse

    out = []
    async with httpx.AsyncClient(timeout=10) as client, aconnect_sse(
        client, "GET", f"{server.url}/api/t/sse/resumable", headers={"Last-Event-ID": last_id}
    ) as source:
        async with asyncio.timeout(timeout):
            async for event in source.aiter_sse():
                out.append((event.event, json.loads(event.data), event.id))
                if event.event == "entry" and out[-1][1].get("n") == last_n:
                    return out
    return out


def settled_value(probe, timeout=20.0):
    """``probe()``'s first truthy value, polling for up to ``timeout`` seconds."""
    value = settled(probe, bool, timeout=timeout)
    assert value, f"not settled after {timeout}s"
    return value


def key_slot(key: str) -> int:
    from redis.crc import key_slot as slot

    return slot(key.encode())


#: The lifecycle events' grace window on these servers (seconds).
LIFECYCLE_GRACE = 2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    redis = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
def servers(cluster, tmp_path_factory, output_dir):
    tmp = tmp_path_factory.mktemp("cluster-daphne")
    env, users = prepare_database(tmp, {"REDIS_URL": cluster.url})
    env = {**env, "DJANGO_SETTINGS_MODULE": "tests.events_settings", "TEST_PRESENCE_TIMEOUT": "3",
           "TEST_LIFECYCLE_GRACE": str(LIFECYCLE_GRACE), "TEST_LIFECYCLE_LOG": str(tmp / "events.jsonl")}
    daphnes = [Daphne(env, output_dir / f"daphne-cluster-{name}.log").start() for name in "ab"]
    yield daphnes, users
    for server in daphnes:
        server.stop()


def shard_subscribers(cluster, shard_channel):
    master = cluster.master_of(key_slot(shard_channel))
    return int(cluster.cli(master, "pubsub", "shardnumsub", shard_channel).split()[1])


async def test_the_layer_keeps_one_subscription_per_group_and_process_and_counts_what_it_drops(cluster, caplog):
    from realtime.pubsub.sharded import RedisClusterChannelLayer, figures

    sender, receiver = RedisClusterChannelLayer(hosts=[cluster.url]), RedisClusterChannelLayer(
        hosts=[cluster.url], capacity=2)
    try:
        members = [await receiver.new_channel() for _ in range(3)]
        for name in members:
            await receiver.group_add("room", name)
        shard = "asgi:g:{room}"
        assert await asyncio.to_thread(shard_subscribers, cluster, shard) == 1
        await sender.group_send("room", {"type": "chat", "n": 1})
        for name in members:
            assert await asyncio.wait_for(receiver.receive(name), 5) == {"type": "chat", "n": 1}
        # a send to a channel of another process goes through that process's inbox
        await sender.send(members[0], {"type": "direct"})
        assert await asyncio.wait_for(receiver.receive(members[0]), 5) == {"type": "direct"}
        # past capacity (2) a member's message is dropped: counted, logged, in the ops figures
        before = figures()["undelivered"]
        for n in range(3):
            await sender.group_send("room", {"type": "chat", "n": n})
        await await_until(lambda: receiver.undelivered == 3, 5, message="one dropped message per member")
        assert figures()["undelivered"] == before + 3
        from realtime.ops.prometheus import exposition

        assert f"realtime_layer_undelivered_total {float(before + 3)}" in exposition().decode()
        assert "could not deliver" in caplog.text
        for name in members:
            await receiver.group_discard("room", name)
        await await_until(lambda: shard_subscribers(cluster, shard) == 0, 5, message="unsubscribed with the last")
        # a receive whose consumer is gone takes its queue with it
        gone = await receiver.new_channel()
        waiting = asyncio.create_task(receiver.receive(gone))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert gone not in receiver.queues
        with pytest.raises(NotImplementedError):
            await sender.send("worker-channel", {"type": "job"})
    finally:
        await sender.flush()
        await receiver.flush()
    assert receiver.queues == {} and receiver.groups == {}


async def test_a_publish_in_one_process_reaches_subscribers_in_the_other_over_sharded_pubsub(servers, cluster):
    (a, b), _ = servers
    on_a, on_b = await subscribed("C1", a, b, via=a)
    await publish_via(a, "live-ticks", {"symbol": "C1", "price": 1})
    assert await receive(on_a) == {"symbol": "C1", "price": 1}
    assert await receive(on_b) == {"symbol": "C1", "price": 1}
    # one sharded subscription per process for the group, on the master of its slot, whatever the sockets
    extra = [await __import__("websockets").connect(f"{b.ws_url}/api/t/channel-ticks/C1") for _ in range(5)]
    channel = f"asgi:g:{{{group_name('live-ticks')}}}"
    master = cluster.master_of(key_slot(channel))
    numsub = cluster.cli(master, "pubsub", "shardnumsub", channel).split()
    assert numsub == [channel, "2"]
    for ws in (on_a, on_b, *extra):
        await ws.close()


async def test_presence_is_one_member_per_user_across_the_two_processes(servers, cluster):
    (a, b), users = servers
    channel = "lobby:cluster"
    watchers = [await opened(server) for server in (a, b)]
    for watcher in watchers:
        assert (await request(watcher, {"op": "subscribe", "ref": "w", "channel": channel}))["ok"]
    companion = f"asgi:g:{{{group_name(COMPANION + channel)}}}"  # each process's presence bridge subscribes to it
    master = cluster.master_of(key_slot(companion))
    await await_until(lambda: cluster.cli(master, "pubsub", "shardnumsub", companion).split() == [companion, "2"],
                      10, message="both processes subscribed to the presence companion")
    tab_a = await member_socket(a, "plain", channel)
    tab_b = await member_socket(b, "plain", channel)
    for watcher in watchers:
        join = await until(watcher, "join")
        assert join["member"]["id"] == users["plain"]
    for watcher in watchers:
        answer = await request(watcher, {"op": "presence", "ref": "p", "channel": channel})
        assert answer["data"]["members"] == [{"id": users["plain"], "info": {"name": "plain"}, "connections": 2}]
    await tab_a.close()
    await tab_b.close()
    for watcher in watchers:
        leave = await until(watcher, "leave", timeout=10)
        assert leave["member"]["id"] == users["plain"]
        await watcher.close()


async def test_the_ops_snapshots_and_the_login_throttle_cache_use_the_cluster(servers, cluster):
    import subprocess

    from realtime.pubsub.cache import RealtimeRedisCache
    from tests.servers import PYTHON, ROOT

    (a, b), _ = servers
    env = {**a.env}
    for server in (a, b):  # each process publishes its snapshot once it has served realtime
        await (await opened(server)).close()

    def both_processes():
        out = subprocess.run([PYTHON, "manage.py", "realtime_status", "--json"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        return data if data["shared"] and len(data["processes"]) == 2 else None

    status = await asyncio.to_thread(settled_value, both_processes)
    assert all("layer" in p["broker"] and p["broker"]["layer"]["undelivered"] == 0 for p in status["processes"])
    cache = RealtimeRedisCache(cluster.url, {})
    for n in range(20):  # keys in many slots, all through one cluster client
        cache.set(f"throttle-{n}", [n], 30)
    assert [cache.get(f"throttle-{n}") for n in range(20)] == [[n] for n in range(20)]
    cache.delete("throttle-0")
    assert cache.get("throttle-0") is None


async def test_a_killed_process_is_reaped_by_the_slot_local_script(servers, cluster, tmp_path):
    import signal

    (a, _), users = servers
    channel = "lobby:cluster-killed"
    doomed = Daphne(a.env, tmp_path / "daphne-cluster-doomed.log").start()
    try:
        watcher = await opened(a)
        assert (await request(watcher, {"op": "subscribe", "ref": "w", "channel": channel}))["ok"]
        companion = f"asgi:g:{{{group_name(COMPANION + channel)}}}"
        await await_until(lambda: shard_subscribers(cluster, companion) == 1, 10, message="a's presence bridge")
        victim = await member_socket(doomed, "editor", channel)
        survivor = await member_socket(a, "staff", channel)  # a has members: it heartbeats, and reaps
        assert {(await until(watcher, "join"))["member"]["id"] for _ in range(2)} == {users["editor"], users["staff"]}
        doomed.stop(signal.SIGKILL)
        leave = await until(watcher, "leave", timeout=20)  # PRESENCE_TIMEOUT is 3 s here
        assert leave["member"] == {"id": users["editor"], "info": {"name": "editor"}, "connections": 0}
        answer = await request(watcher, {"op": "presence", "ref": "p", "channel": channel})
        assert [m["id"] for m in answer["data"]["members"]] == [users["staff"]]
        await victim.close()
        await survivor.close()
        await watcher.close()
    finally:
        doomed.stop(signal.SIGKILL)


async def test_lifecycle_events_are_decided_in_one_slot_and_delivered_once(servers, cluster):
    (a, b), users = servers
    log = Path(a.env["TEST_LIFECYCLE_LOG"])
    pk, room = users["owner2"], "lobby:cluster-lifecycle"
    # Every key a lifecycle script touches is in one slot: the stream, the windows, presence's counts.
    keys = [lifecycle.STREAM, *(key(kind) for kind in PRESENCE_NAMES for key in (
        lifecycle.pending_key, lifecycle.announced_key)), *map(counts_key, PRESENCE_NAMES.values())]
    assert len({key_slot(key) for key in keys}) == 1, keys
    sockets = []
    for server in (a, b):  # one user, one channel, on both processes
        ws = await opened(server)
        assert (await request(ws, {"op": "connect", "ref": "c", "token": token_from(server, "owner2")}))["ok"]
        assert (await request(ws, {"op": "subscribe", "ref": "s", "channel": room}))["ok"]
        sockets.append(ws)
    for key, event in ((pk, "user_online"), (room, "channel_occupied")):
        await await_until(lambda key=key, event=event: of(log, key, event), 15, message=event)
    for ws in sockets:
        await ws.close()
    for key, event in ((pk, "user_offline"), (room, "channel_vacated")):
        await await_until(lambda key=key, event=event: of(log, key, event), LIFECYCLE_GRACE + 15, message=event)
    # once each, across the two processes: after the window and a bit nothing more has come
    seen = await asettled(lambda: of(log, pk) + of(log, room), lambda seen: len(seen) > 4, LIFECYCLE_GRACE + 2)
    assert sorted(e["event"] for e in seen) == ["channel_occupied", "channel_vacated", "user_offline", "user_online"]
    assert len({e["id"] for e in seen}) == 4
    # the stream lives on the master of that slot, and its group has nothing left pending
    master = cluster.master_of(key_slot(lifecycle.STREAM))
    assert int(cluster.cli(master, "xlen", lifecycle.STREAM)) >= 4

    def pending():
        return cluster.cli(master, "xpending", lifecycle.STREAM, lifecycle.GROUP).split()[0]

    assert await asyncio.to_thread(settled, pending, lambda count: count == "0", 10) == "0"


async def test_history_resume_across_the_two_processes(servers, cluster):
    (a, b), _ = servers
    seen = await two_entries_followed(a, b)
    await publish_via(a, "live-history", {"n": 3}, {"n": 4})
    resumed = await read_events(b.url, 2, last_event_id=seen[-1][1])
    assert [(e, json.loads(d)["n"]) for e, _, d in resumed] == [("entry", 3), ("entry", 4)]
    # the stream lives on the master of its hash tag's slot
    assert cluster.cli(cluster.master_of(key_slot(history_key("live-history"))), "exists",
                       history_key("live-history")).strip() == "1"


async def test_after_a_master_is_killed_every_publish_reaches_every_subscriber_and_resumes_are_honest(
        servers, cluster):
    (a, b), _ = servers
    channel = f"asgi:g:{{{group_name('live-ticks')}}}"
    on_a, on_b = await subscribed("F1", a, b, via=a)
    followed: list = []
    follower = asyncio.create_task(follow(b, "/api/t/sse/resumable", followed))
    try:
        await primed_followers([followed], a)
        last_seen = entries(followed)[-1][1] if entries(followed) else followed[-1][1]
        victim = cluster.master_of(key_slot(channel))
        cluster.kill(victim)
        await asyncio.to_thread(cluster.wait_failover, victim, 30)
        # the layer in each process resubscribes on the promoted replica: probes until both hear again
        on_a.close_timeout = on_b.close_timeout = 1
        await on_a.close()
        await on_b.close()
        on_a, on_b = await subscribed("F2", a, b, via=b)
        # and the other way: the failover is over for a process once its own layer hears the promoted
        # master (until then a publish from the other process is lost to it: at most once, as documented)
        await primed(lambda n: publish_via(a, "live-ticks", {"symbol": "F2", "probe": n}),
                     [ws_receiver(ws, lambda tick: tick.get("probe")) for ws in (on_a, on_b)])
        for n in range(20):
            await publish_via(a if n % 2 else b, "live-ticks", {"symbol": "F2", "n": n})
        for ws in (on_a, on_b):
            got = [(await receive(ws, 10))["n"] for _ in range(20)]
            assert sorted(got) == list(range(20))
        # history after the failover: every message since the id, or a reset first (never a silent hole)
        after: list = []
        follower.cancel()
        follower = asyncio.create_task(follow(b, "/api/t/sse/resumable", after))
        await primed_followers([after], a, b)
        await publish_via(a, "live-history", {"n": 100}, {"n": 101})
        live = await await_until(lambda: [d for _, _, d in entries(after)] or None, 10)
        assert live == [{"n": 100}, {"n": 101}] or len(live) < 2
        resumed = await resume_until(a, last_seen, 101)
        if resumed[0][0] != "reset":  # recovered: everything since last_seen, so every probe and both entries
            from realtime.pubsub.redis import sync_client

            stored = sync_client(cluster.url).xrange(history_key("live-history"), min=f"({last_seen}", max="+")
            assert [i for _, _, i in resumed] == [i.decode() for i, _ in stored]
        assert resumed[-1][:2] == ("entry", {"n": 101})
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await on_a.close()
        await on_b.close()
    assert "resubscribing" in a.log() or "resubscribing" in b.log()
