"""Two daphne processes over a Redis Sentinel group of our own (one master, one replica, three sentinels):
REDIS_URL is ``redis+sentinel://.../mymaster/0``, the channel layer channels_redis's pub/sub layer on a
``{"sentinels": [...], "master_name": ...}`` host.

Publishes cross processes; history resumes across them; after SIGKILL of the master mid-publish (the
replica promoted within a few seconds) every publish reaches every subscriber in both processes, and
a resume either replays every message since its id or starts with ``reset``; presence, the ops
snapshots and the login throttle's cache work on the promoted master. Never the shared Redis.
A master demoted alive (``SENTINEL FAILOVER``) loses both processes' stream readers and layer
subscriptions to the new one. The tests run in file order on one group: those after the failover
test use the promoted master.
"""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest
import websockets

from realtime.pubsub.channel import group_name
from realtime.pubsub.history import key as history_key
from realtime.topics.presence import COMPANION
from tests.redis_sentinel import SERVICE, RedisSentinel
from tests.servers import PYTHON, ROOT, Daphne, prepare_database
from tests.test_channel_redis import (
    entries,
    follow,
    primed_followers,
    publish_via,
    receive,
    subscribed,
    two_entries_followed,
)
from tests.test_redis_cluster import resume_until, settled_value
from tests.test_topics_live import member_socket, opened, request, until
from tests.waiting import await_until, layer_group


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    sentinel = RedisSentinel(tmp_path_factory.mktemp("redis-sentinel")).start()
    yield sentinel
    sentinel.stop()


@pytest.fixture(scope="module")
def servers(group, tmp_path_factory, output_dir):
    tmp = tmp_path_factory.mktemp("sentinel-daphne")
    env, users = prepare_database(tmp, {"REDIS_URL": group.url})
    env = {**env, "DJANGO_SETTINGS_MODULE": "tests.topics_settings", "TEST_PRESENCE_TIMEOUT": "3"}
    daphnes = [Daphne(env, output_dir / f"daphne-sentinel-{name}.log").start() for name in "ab"]
    yield daphnes, users
    for server in daphnes:
        server.stop()


def xread_clients(group, port: int) -> int:
    """Connections of server ``port`` whose last command is a (blocking) ``XREAD``: the stream readers."""
    return sum("cmd=xread" in line.split() for line in group.cli(port, "client", "list").splitlines())


def subscribers(group, channel: str) -> int:
    """Connections subscribed to the pub/sub ``channel`` on the master now."""
    return int(group.cli(group.master(), "pubsub", "numsub", channel).split()[1])


def sentinel_clients(group) -> int:
    """Client connections the three sentinels hold now (redis-cli's own excluded)."""
    return sum(len(group.cli(port, "client", "list").splitlines()) - 1 for port in group.sentinel_ports)


async def test_every_client_kind_reaches_the_master_the_sentinels_name_and_closes_what_it_opened(group):
    from realtime.pubsub.cache import RealtimeRedisCache
    from realtime.pubsub.redis import async_client, channel_layer_host, connection_client, sentinel_target, sync_client

    target = sentinel_target(group.url)
    assert target.sentinels == [("127.0.0.1", port) for port in group.sentinel_ports] and target.service == SERVICE
    master = group.master()
    before = sentinel_clients(group)
    for client in (async_client(group.url), connection_client(group.url)):
        assert (await client.execute_command("ROLE"))[0] == b"master"
        assert client.connection_pool.master_address == ("127.0.0.1", master)
        await client.aclose()
    # aclose() also closed the connections to the sentinels that found the master (redis-py leaves them open)
    await await_until(lambda: sentinel_clients(group) <= before, 5, message="sentinel connections closed")
    assert sync_client(group.url).execute_command("ROLE")[0] == b"master"
    host = channel_layer_host(group.url)
    assert host["master_name"] == SERVICE and host["sentinels"] == target.sentinels
    cache = RealtimeRedisCache(group.url, {})
    cache.set("sentinel-throttle", [1], 30)
    assert cache.get("sentinel-throttle") == [1]
    assert group.cli(master, "exists", ":1:sentinel-throttle").strip() == "1"


async def test_a_publish_in_one_process_reaches_subscribers_in_the_other(servers, group):
    (a, b), _ = servers
    on_a, on_b = await subscribed("S1", a, b, via=a)
    await publish_via(b, "live-ticks", {"symbol": "S1", "price": 1})
    assert await receive(on_a) == {"symbol": "S1", "price": 1}
    assert await receive(on_b) == {"symbol": "S1", "price": 1}
    # one pub/sub subscription per process for the group, on the master, whatever the sockets
    extra = [await websockets.connect(f"{b.ws_url}/api/t/channel-ticks/S1") for _ in range(5)]
    assert subscribers(group, layer_group(group_name("live-ticks"))) == 2
    for ws in (on_a, on_b, *extra):
        await ws.close()


async def test_history_resume_across_the_two_processes(servers, group):
    (a, b), _ = servers
    seen = await two_entries_followed(a, b)
    await publish_via(a, "live-history", {"n": 3}, {"n": 4})
    resumed = await resume_until(b, seen[-1][1], 4)
    assert [(e, d["n"]) for e, d, _ in resumed] == [("entry", 3), ("entry", 4)]
    assert group.cli(group.master(), "exists", history_key("live-history")).strip() == "1"


class Publisher:
    """Publishes ``{"n": k}`` to live-history through one process, one after another, until stopped;
    keeps what each publish answered (a broker error while the master is away is an answer too)."""

    def __init__(self, server: Daphne) -> None:
        self.server = server
        self.answers: dict[int, dict] = {}
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        n = 1000
        while not self.stopping.is_set():
            try:
                async with websockets.connect(f"{self.server.ws_url}/api/t/publish-or-report/live-history",
                                              open_timeout=5, close_timeout=1) as ws:
                    while not self.stopping.is_set():
                        n += 1
                        await ws.send(json.dumps({"n": n}))
                        self.answers[n] = json.loads(await asyncio.wait_for(ws.recv(), 15))
                        await asyncio.sleep(0.02)
            except (OSError, TimeoutError, websockets.ConnectionClosed):
                await asyncio.sleep(0.1)

    def published(self) -> list[int]:
        return [n for n, answer in self.answers.items() if "delivered" in answer]


def honest(resumed: list, last_id: str, handed_out: list[tuple[str, int]]) -> None:
    """A resume from ``last_id`` starts with ``reset``, or replays every id any subscriber was handed
    after ``last_id``, in order (the old master's lost last writes included: none may be skipped)."""
    if resumed and resumed[0][0] == "reset":
        return
    replayed = [i for event, _, i in resumed if event == "entry"]
    later = [i for i, _ in handed_out if tuple(map(int, i.split("-"))) > tuple(map(int, last_id.split("-")))]
    missing = [i for i in later if i not in replayed]
    assert not missing, f"recovered, but {missing} (handed out after {last_id}) are not in the replay"


async def test_after_the_master_is_killed_mid_publish_every_publish_reaches_every_subscriber_honestly(
        servers, group):
    (a, b), _ = servers
    on_a, on_b = await subscribed("K1", a, b, via=a)
    followed = {name: [] for name in "ab"}
    followers = [asyncio.create_task(follow(server, "/api/t/sse/resumable", followed[name]))
                 for name, server in zip("ab", (a, b), strict=True)]
    publisher = Publisher(a)
    publishing = asyncio.create_task(publisher.run())
    try:
        await primed_followers(list(followed.values()), a, b)
        await await_until(lambda: len(entries(followed["b"])) >= 3, 10, message="publishes before the kill")
        before_kill = entries(followed["b"])[0][1]
        killed = group.master()
        group.kill(killed)  # mid-publish: the publisher sends every 20 ms
        promoted = await asyncio.to_thread(group.wait_failover, killed, 30)
        failed_over_at = max(publisher.answers)
        # every publish answered after the failover reaches both followers (the readers moved to the new master)
        await await_until(lambda: len([n for n in publisher.published() if n > failed_over_at]) >= 10, 30,
                          message="10 publishes on the promoted master")
        publisher.stopping.set()
        await asyncio.wait_for(publishing, 20)
        after = [n for n in publisher.published() if n > failed_over_at]
        for name in "ab":
            await await_until(lambda name=name: {d.get("n") for _, _, d in entries(followed[name])} >= set(after),
                              15, message=f"every publish after the failover reached the follower on {name}")
        # publishes that failed while no master answered said so (broker_unavailable), none hung
        assert all(set(answer) & {"delivered", "error"} for answer in publisher.answers.values())
        handed_out = sorted({(i, d["n"]) for name in "ab" for _, i, d in entries(followed[name])},
                            key=lambda e: tuple(map(int, e[0].split("-"))))
        # a resume from before the kill: the old master's unreplicated last writes may be lost, so it resets
        first_kept = group.cli(promoted, "xrange", history_key("live-history"), "-", "+", "count", "1").split()[0]
        assert tuple(map(int, first_kept.split("-"))) <= tuple(map(int, before_kill.split("-"))), \
            "the id is trimmed away: its reset would prove nothing"
        resumed = await resume_until(b, before_kill, after[-1], timeout=15)
        honest(resumed, before_kill, handed_out)
        assert resumed[0][0] == "reset", "a resume from before the failover must not vouch for the lost writes"
        assert resumed[-1][:2] == ("entry", {"n": after[-1]})
        # a resume from an id the promoted master handed out after its promotion moment is recovered, complete
        fence = int(group.cli(promoted, "hvals", "realtime:promotions").split()[0])
        await publish_via(b, "live-history", {"n": 9997}, {"n": 9998}, {"n": 9999})
        await await_until(lambda: 9999 in {d.get("n") for _, _, d in entries(followed["a"])}, 10)
        handed_out = sorted({(i, d["n"]) for name in "ab" for _, i, d in entries(followed[name])},
                            key=lambda e: tuple(map(int, e[0].split("-"))))
        since = next(i for i, n in handed_out if int(i.split("-")[0]) > fence and n != 9999)
        resumed = await resume_until(a, since, 9999, timeout=15)
        assert resumed[0][0] == "entry"
        honest(resumed, since, handed_out)
        assert resumed[-1][:2] == ("entry", {"n": 9999})
        # the layer (no history: at most once) resubscribed on the promoted master in both processes
        on_a.close_timeout = on_b.close_timeout = 1
        await on_a.close()
        await on_b.close()
        on_a, on_b = await subscribed("K2", a, b, via=b)
        for n in range(20):
            await publish_via(a if n % 2 else b, "live-ticks", {"symbol": "K2", "n": n})
        for ws in (on_a, on_b):
            assert sorted([(await receive(ws, 10))["n"] for _ in range(20)]) == list(range(20))
        assert subscribers(group, layer_group(group_name("live-ticks"))) == 2
    finally:
        publisher.stopping.set()
        for task in (*followers, publishing):
            task.cancel()
        await asyncio.gather(*followers, publishing, return_exceptions=True)
        await on_a.close()
        await on_b.close()


async def test_presence_is_one_member_per_user_across_the_two_processes_after_the_failover(servers, group):
    (a, b), users = servers
    channel = "lobby:sentinel"
    watchers = [await opened(server) for server in (a, b)]
    for watcher in watchers:
        assert (await request(watcher, {"op": "subscribe", "ref": "w", "channel": channel}))["ok"]
    companion = layer_group(group_name(COMPANION + channel))  # each process's presence bridge subscribes to it
    await await_until(lambda: subscribers(group, companion) == 2, 10, message="both presence bridges")
    tab_a = await member_socket(a, "plain", channel)
    tab_b = await member_socket(b, "plain", channel)
    for watcher in watchers:
        assert (await until(watcher, "join"))["member"]["id"] == users["plain"]
    for watcher in watchers:
        answer = await request(watcher, {"op": "presence", "ref": "p", "channel": channel})
        assert answer["data"]["members"] == [{"id": users["plain"], "info": {"name": "plain"}, "connections": 2}]
    await tab_a.close()
    await tab_b.close()
    for watcher in watchers:
        assert (await until(watcher, "leave", timeout=10))["member"]["id"] == users["plain"]
        await watcher.close()


async def test_the_ops_snapshots_and_the_login_throttle_cache_use_the_promoted_master(servers, group):
    from realtime.pubsub.cache import RealtimeRedisCache

    (a, b), _ = servers
    for server in (a, b):  # each process publishes its snapshot once it has served realtime
        await (await opened(server)).close()

    def both_processes():
        out = subprocess.run([PYTHON, "manage.py", "realtime_status", "--json"], cwd=ROOT, env=a.env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        return data if data["shared"] and len(data["processes"]) == 2 else None

    status = await asyncio.to_thread(settled_value, both_processes)
    assert all(p["broker"]["up"] for p in status["processes"])
    cache = RealtimeRedisCache(group.url, {})
    cache.set("sentinel-after", [2], 30)
    assert cache.get("sentinel-after") == [2]
    assert group.cli(group.master(), "exists", ":1:sentinel-after").strip() == "1"
    cache.delete("sentinel-after")
    assert cache.get("sentinel-after") is None


async def test_a_master_demoted_alive_loses_its_readers_and_subscribers_to_the_new_one(servers, group):
    (a, b), _ = servers
    killed = next(port for port in group.server_ports if group.processes[port].poll() is not None)
    await asyncio.to_thread(group.restart_as_replica, killed)
    on_a, on_b = await subscribed("D1", a, b, via=a)
    followed = {name: [] for name in "ab"}
    followers = [asyncio.create_task(follow(server, "/api/t/sse/resumable", followed[name]))
                 for name, server in zip("ab", (a, b), strict=True)]
    try:
        await primed_followers(list(followed.values()), a, b)
        old = group.master()
        await await_until(lambda: xread_clients(group, old) == 2, 10, message="a reader per process on the master")
        new = await asyncio.to_thread(group.switch_over)
        assert new == killed
        # the blocked XREADs left the demoted master (still alive, a replica now) for the new one
        await await_until(lambda: xread_clients(group, new) == 2 and xread_clients(group, old) == 0, 20,
                          message="both processes' readers on the new master, none on the demoted one")
        await publish_via(b, "live-history", {"n": 7001}, {"n": 7002})
        for name in "ab":
            await await_until(lambda name=name: {7001, 7002} <= {d.get("n") for _, _, d in entries(followed[name])},
                              15, message=f"publishes on the new master reached the follower on {name}")
        on_a.close_timeout = on_b.close_timeout = 1
        await on_a.close()
        await on_b.close()
        on_a, on_b = await subscribed("D2", a, b, via=b)
        await publish_via(a, "live-ticks", {"symbol": "D2", "n": 1})
        assert (await receive(on_a, 10))["n"] == 1 and (await receive(on_b, 10))["n"] == 1
        assert subscribers(group, layer_group(group_name("live-ticks"))) == 2
        assert int(group.cli(old, "pubsub", "numsub", layer_group(group_name("live-ticks"))).split()[1]) == 0
    finally:
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        await on_a.close()
        await on_b.close()


async def test_a_write_the_replica_never_got_is_not_resumed_over_as_if_it_had_never_been(servers, group):
    """A real lost write: the replica is cut off (the master now wants a password the replica lacks), a
    message is published and delivered, the master is killed. The promoted replica's stream does not
    have it; a resume from the id before it must say so rather than replay around it."""
    (a, b), _ = servers
    followed: list = []
    follower = asyncio.create_task(follow(b, "/api/t/sse/resumable", followed))
    try:
        await primed_followers([followed], a)
        await publish_via(a, "live-history", {"n": 8001})
        await await_until(lambda: 8001 in {d.get("n") for _, _, d in entries(followed)}, 10)
        master = group.master()
        await asyncio.to_thread(group.wait_replicated, master)
        replica = group.replica_of(master)
        # one redis-cli connection: authenticated before the password exists, so it can still cut the link
        subprocess.run([group.redis_cli, "-p", str(master)], input="CONFIG SET requirepass cut-off\n"
                       "CLIENT KILL TYPE replica\n", capture_output=True, text=True, timeout=10, check=True)
        await await_until(lambda: "master_link_status:down" in group.cli(replica, "info", "replication"), 10,
                          message="the replica cut off from its master")
        await publish_via(a, "live-history", {"n": 8002})  # daphne's pooled connections are authenticated
        await await_until(lambda: 8002 in {d.get("n") for _, _, d in entries(followed)}, 10,
                          message="the write the replica never got, delivered live")
        handed_out = [(i, d["n"]) for _, i, d in entries(followed)]
        before = next(i for i, n in handed_out if n == 8001)
        group.kill(master)
        promoted = await asyncio.to_thread(group.wait_failover, master, 30)
        assert promoted == replica
        stored = group.cli(promoted, "xrange", history_key("live-history"), "-", "+").split()
        lost = next(i for i, n in handed_out if n == 8002)
        assert before in stored and lost not in stored, "the write was not lost: this test proves nothing"
        await publish_via(a, "live-history", {"n": 8003})
        resumed = await resume_until(a, before, 8003, timeout=15)
        honest(resumed, before, handed_out)  # replaying 8003 after 8001 as "recovered" would hide 8002
        assert resumed[0][0] == "reset" and resumed[-1][:2] == ("entry", {"n": 8003})
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
