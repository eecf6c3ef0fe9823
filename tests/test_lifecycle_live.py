"""Lifecycle events (``realtime.events``) on real daphne processes sharing a redis-server of this
module's own, and on one daphne without Redis. tests/eventsapp's receivers write every call to a
log file that the tests read: which event, for which key, with which id, in which process.

Each change must be handled once across the processes, a reconnect inside the grace window must emit
nothing, and a SIGKILLed process's users must go offline once (after PRESENCE_TIMEOUT, then the grace).
"""

import asyncio
import json
import os
import signal
import time

import pytest

from realtime.revocation import CONTROL_CHANNEL
from tests.servers import Daphne, prepare_database, require, which
from tests.test_channel_redis import RedisServer
from tests.test_recheck_live import shell
from tests.test_topics_live import opened, request
from tests.waiting import asettled, await_until

pytestmark = pytest.mark.timeout(300)

GRACE = 5.0  # the shipped default of REALTIME["LIFECYCLE_GRACE"]
PRESENCE_TIMEOUT = 3
CLAIM_AFTER = 2
#: Users who drop and come back at once in the storm test (TEST_LIFECYCLE_STORM chooses another count).
STORM = int(os.environ.get("TEST_LIFECYCLE_STORM", "200"))
#: Of them, users who do not come back: they, and only they, go offline.
LEAVERS = 10
NAMED = ("lc-two", "lc-room-a", "lc-room-b", "lc-killed", "lc-survivor", "lc-fails", "lc-solo", "lc-hangs")

USERS = """
from django.contrib.auth.models import User
from rest_framework_simplejwt.tokens import AccessToken
names = {names!r} + [f"lc-storm-{{i}}" for i in range({storm})]
User.objects.bulk_create([User(username=name) for name in names])
for user in User.objects.filter(username__in=names):
    print(f"{{user.username}}={{user.pk}}={{AccessToken.for_user(user)}}")
"""


def make_users(env):
    out = shell(env, USERS.format(names=list(NAMED), storm=STORM))
    return {name: (int(pk), token) for name, pk, token in (line.split("=") for line in out.split() if "=" in line)}


def logged(path):
    if not path.exists():
        return []
    # Only whole lines: a receiver's append may be under way while this reads (CI read half of one).
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def of(path, key, event=None):
    return [e for e in logged(path) if e["key"] == key and (event is None or e["event"] == event)]


async def connected(server, token):
    ws = await opened(server)
    reply = await request(ws, {"op": "connect", "ref": "c", "token": token})
    assert reply.get("ok") is True, reply
    return ws


@pytest.fixture(scope="module")
def lifecycle_redis(tmp_path_factory):
    require(which("redis-server") is not None, "redis-server")
    redis = RedisServer(tmp_path_factory.mktemp("lifecycle-redis")).start()
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
def cluster(lifecycle_redis, tmp_path_factory, output_dir):
    tmp = tmp_path_factory.mktemp("lifecycle-cluster")
    log = tmp / "events.jsonl"
    env, _ = prepare_database(tmp, {"REDIS_URL": lifecycle_redis.url})
    env = {**env, "DJANGO_SETTINGS_MODULE": "tests.events_settings", "TEST_PRESENCE_TIMEOUT": str(PRESENCE_TIMEOUT),
           "TEST_LIFECYCLE_GRACE": str(GRACE), "TEST_LIFECYCLE_CLAIM_AFTER": str(CLAIM_AFTER),
           "TEST_LIFECYCLE_LOG": str(log)}
    users = make_users(env)
    env["TEST_LIFECYCLE_FAILING_USER"] = str(users["lc-fails"][0])
    env["TEST_LIFECYCLE_HANGING_USER"] = str(users["lc-hangs"][0])
    servers = [Daphne(env, output_dir / f"daphne-lifecycle-{name}.log").start() for name in "ab"]
    yield servers, env, users, log, output_dir
    for server in servers:
        server.stop()


def no_more(path, key, expected):
    """Settle: the events of ``key`` once more than ``expected`` of them have come, or after the grace and a bit."""
    return asettled(lambda: of(path, key), lambda seen: len(seen) > expected, timeout=GRACE + 2, interval=0.1)


async def test_a_user_on_two_processes_goes_online_once_and_offline_once(cluster):
    (a, b), _, users, log, _ = cluster
    pk, token = users["lc-two"]
    on_a = await connected(a, token)
    await await_until(lambda: of(log, pk, "user_online"), message="user_online of lc-two")
    on_b = await connected(b, token)
    await on_a.close()  # one connection left, on b: nothing to say
    seen = await no_more(log, pk, 1)
    assert [e["event"] for e in seen] == ["user_online"]
    await on_b.close()
    closed_at = time.monotonic()
    await await_until(lambda: of(log, pk, "user_offline"), timeout=GRACE + 10, message="user_offline of lc-two")
    assert time.monotonic() - closed_at >= GRACE - 0.5  # debounced by the grace window, not at once
    seen = await no_more(log, pk, 2)
    assert [e["event"] for e in seen] == ["user_online", "user_offline"]
    assert len({e["id"] for e in seen}) == 2
    assert of(log, CONTROL_CHANNEL) == []  # realtime's own channels are not the application's to hear of


async def test_a_channel_subscribed_on_two_processes_is_occupied_once_and_vacated_once(cluster):
    (a, b), _, users, log, _ = cluster
    room = "lobby:lc-room"
    sockets = []
    for server, name in ((a, "lc-room-a"), (b, "lc-room-b")):
        ws = await connected(server, users[name][1])
        assert (await request(ws, {"op": "subscribe", "ref": "s", "channel": room}))["ok"]
        sockets.append(ws)
    await await_until(lambda: of(log, room, "channel_occupied"), message="channel_occupied")
    await sockets[0].close()
    assert [e["event"] for e in await no_more(log, room, 1)] == ["channel_occupied"]
    await sockets[1].close()
    await await_until(lambda: of(log, room, "channel_vacated"), timeout=GRACE + 10, message="channel_vacated")
    assert [e["event"] for e in await no_more(log, room, 2)] == ["channel_occupied", "channel_vacated"]


async def test_a_failing_receiver_is_logged_and_its_event_not_run_again(cluster):
    (a, b), _, users, log, _ = cluster
    pk, token = users["lc-fails"]
    ws = await connected(a, token)
    await await_until(lambda: of(log, pk, "user_online"), message="user_online of lc-fails")
    # acknowledged although it raised: not claimed again after CLAIM_AFTER by either process
    seen = await asettled(lambda: of(log, pk), lambda seen: len(seen) > 1, timeout=CLAIM_AFTER * 3)
    assert [e["event"] for e in seen] == ["user_online"]
    logs = a.log() + b.log()
    assert "The user_online receiver" in logs and "a receiver that fails" in logs
    await ws.close()


async def test_the_users_of_a_killed_process_go_offline_once(cluster):
    (a, _), env, users, log, output_dir = cluster
    victim, survivor = users["lc-killed"], users["lc-survivor"]
    doomed = Daphne(env, output_dir / "daphne-lifecycle-doomed.log").start()
    try:
        kept = await connected(a, survivor[1])  # a holds someone, so it heartbeats and reaps the dead
        lost = await connected(doomed, victim[1])
        await await_until(lambda: of(log, victim[0], "user_online") and of(log, survivor[0], "user_online"),
                          message="both online")
        doomed.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        await await_until(lambda: of(log, victim[0], "user_offline"), timeout=PRESENCE_TIMEOUT + GRACE + 20,
                          message="user_offline of the killed process's user")
        waited = time.monotonic() - killed_at
        # reaped no sooner than PRESENCE_TIMEOUT after its last heartbeat (a third of it before the kill at
        # most), then the grace window: without the window it comes within about PRESENCE_TIMEOUT + 1.5 s
        assert waited >= PRESENCE_TIMEOUT * 2 / 3 + GRACE - 0.5, waited
        assert [e["event"] for e in await no_more(log, victim[0], 2)] == ["user_online", "user_offline"]
        assert [e["event"] for e in of(log, survivor[0])] == ["user_online"]
        await kept.close()
        await lost.close()
    finally:
        doomed.stop(signal.SIGKILL)


async def test_a_storm_of_reconnects_inside_the_window_sends_no_offline_for_those_who_came_back(cluster):
    (a, b), _, users, log, _ = cluster
    storm = [users[f"lc-storm-{i}"] for i in range(STORM)]
    gate = asyncio.Semaphore(50)

    async def connect(server, token):
        async with gate:
            return await connected(server, token)

    first = await asyncio.gather(*(connect(a if i % 2 else b, token) for i, (_, token) in enumerate(storm)))
    keys = {pk for pk, _ in storm}
    await await_until(lambda: keys <= {e["key"] for e in logged(log) if e["event"] == "user_online"},
                      timeout=60, message=f"{STORM} user_online")

    async def bounce(i, ws, token):
        await ws.close()
        if i < LEAVERS:
            return None
        return await connect(b if i % 2 else a, token)  # back on the other process

    started = time.monotonic()
    pairs = enumerate(zip(first, storm, strict=True))
    second = await asyncio.gather(*(bounce(i, ws, token) for i, (ws, (_, token)) in pairs))
    storm_took = time.monotonic() - started
    assert storm_took < GRACE, f"the storm took {storm_took:.1f} s, longer than the window"
    leavers = {pk for pk, _ in storm[:LEAVERS]}

    def offline():
        return {e["key"] for e in logged(log) if e["event"] == "user_offline" and e["key"] in keys}

    await await_until(lambda: offline() >= leavers, timeout=GRACE + 20, message="the leavers' user_offline")
    gone = await asettled(offline, lambda now: now - leavers, timeout=GRACE + 2, interval=0.2)
    assert gone == leavers  # those who came back within the window: no user_offline
    events = [e for e in logged(log) if e["key"] in keys]
    assert len([e for e in events if e["event"] == "user_online"]) == STORM  # and no second user_online
    assert len(events) == STORM + LEAVERS
    assert len({e["id"] for e in events}) == len(events)  # each entry handled by one process only
    print(f"storm of {STORM} reconnects took {storm_took:.2f} s; handled by processes "
          f"{sorted({e['pid'] for e in events})}")
    await asyncio.gather(*(ws.close() for ws in second if ws is not None))


async def test_an_event_held_by_a_killed_process_is_claimed_and_handled_by_another(cluster):
    """Runs last of the cluster's tests: it may kill a or b (whichever took the entry)."""
    (a, b), env, users, log, output_dir = cluster
    pk, token = users["lc-hangs"]
    third = Daphne(env, output_dir / "daphne-lifecycle-third.log").start()
    servers = {server.process.pid: server for server in (a, b, third)}
    try:  # a process consumes from its first tracked connection on: one each on a and b
        keep = [await connected(server, users[name][1]) for server, name in ((a, "lc-room-a"), (b, "lc-room-b"))]
        ws = await connected(third, token)
        first = (await await_until(lambda: of(log, pk, "user_online"), message="the hanging receiver's run"))[0]
        # its receiver hangs, but a live consumer keeps its entry: not claimed after CLAIM_AFTER
        runs = await asettled(lambda: of(log, pk), lambda seen: len(seen) > 1, timeout=CLAIM_AFTER * 3)
        assert len(runs) == 1
        servers[first["pid"]].stop(signal.SIGKILL)  # the consumer dies with the entry pending
        await await_until(lambda: len(of(log, pk)) > 1, timeout=CLAIM_AFTER + 20, message="the claimed run")
        runs = await asettled(lambda: of(log, pk), lambda seen: len(seen) > 2, timeout=CLAIM_AFTER * 3)
        assert [(e["event"], e["id"]) for e in runs] == [("user_online", first["id"])] * 2  # the same entry
        assert runs[1]["pid"] != first["pid"] and runs[1]["pid"] in servers
        await ws.close()
        for held in keep:
            await held.close()
    finally:
        third.stop(signal.SIGKILL)


# -- one process, no Redis ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def solo(tmp_path_factory, output_dir):
    tmp = tmp_path_factory.mktemp("lifecycle-solo")
    log = tmp / "events.jsonl"
    env, _ = prepare_database(tmp)
    env = {**env, "DJANGO_SETTINGS_MODULE": "tests.events_settings", "TEST_LIFECYCLE_GRACE": str(GRACE),
           "TEST_LIFECYCLE_LOG": str(log)}
    users = make_users(env)
    server = Daphne(env, output_dir / "daphne-lifecycle-solo.log").start()
    yield server, users, log
    server.stop()


async def test_without_redis_the_same_events_come_from_the_one_process(solo):
    server, users, log = solo
    pk, token = users["lc-solo"]
    room = "lobby:lc-solo"
    ws = await connected(server, token)
    assert (await request(ws, {"op": "subscribe", "ref": "s", "channel": room}))["ok"]
    await await_until(lambda: of(log, pk, "user_online") and of(log, room, "channel_occupied"), message="online")
    await ws.close()
    ws = await connected(server, token)  # back inside the window
    assert [e["event"] for e in await no_more(log, pk, 1)] == ["user_online"]
    await ws.close()
    await await_until(lambda: of(log, pk, "user_offline"), timeout=GRACE + 10, message="user_offline")
    await await_until(lambda: of(log, room, "channel_vacated"), timeout=GRACE + 10, message="channel_vacated")
    assert [e["event"] for e in of(log, pk)] == ["user_online", "user_offline"]
    assert [e["event"] for e in of(log, room)] == ["channel_occupied", "channel_vacated"]
    assert all(e["id"].startswith("local-") for e in logged(log))
