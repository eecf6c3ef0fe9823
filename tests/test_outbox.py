"""Publish on commit and the transactional outbox, in processes of their own, on SQLite and PostgreSQL.

The publisher is ``manage.py commit_publish`` (tests/liveapp): it publishes inside
``transaction.atomic()`` as a view would and prints what the channels' Redis Streams held before and
after the commit. The worker is the shipped ``manage.py realtime_outbox``. The consumer is the
Redis Stream of each history channel (what every subscriber in every process is fed from), read
with XRANGE: it sees every delivery, duplicates included, in order.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import redis

from realtime.pubsub.history import key as history_key
from tests.isolation import redis_db
from tests.servers import PYTHON, ROOT, postgres_database, prepare_database, redis_available, require, stop
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

REDIS = f"redis://127.0.0.1:6379/{redis_db()}"
CHANNELS = [f"live-commit-{n}" for n in range(4)]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def env(request, tmp_path_factory):
    require(redis_available(), "Redis on 127.0.0.1:6379")
    extra = {"REDIS_URL": REDIS}
    if request.param == "sqlite":
        yield prepare_database(tmp_path_factory.mktemp("outbox-sqlite"), extra)[0]
        return
    with postgres_database("realtime_outbox") as (_, name):
        yield prepare_database(tmp_path_factory.mktemp("outbox-pg"), {**extra, "POSTGRES_DB": name})[0]


@pytest.fixture
def streams(env):
    """The channels' streams, emptied, and the outbox table, emptied."""
    client = redis.Redis.from_url(REDIS)
    client.delete(*(history_key(name) for name in CHANNELS))
    manage(env, "outbox_rows", "--clear")
    yield client
    client.close()


def manage(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=check, timeout=60)


def commit_publish(env: dict[str, str], *args: str) -> dict:
    return json.loads(manage(env, "commit_publish", *args).stdout)


def rows(env: dict[str, str]) -> list[dict]:
    return json.loads(manage(env, "outbox_rows").stdout)


def delivered(client: redis.Redis, name: str = CHANNELS[0]) -> list[tuple[str, dict]]:
    """What the channel's subscribers were given, in order: (stream id, message)."""
    return [(i.decode(), json.loads(f[b"m"])) for i, f in client.xrange(history_key(name))]


def worker(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([PYTHON, str(ROOT / "manage.py"), "realtime_outbox", "--interval", "0.05", *args],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


# -- publish on commit ---------------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["sync", "async"])
def test_a_publish_inside_atomic_waits_for_the_commit_and_goes_out_once(env, streams, via):
    result = commit_publish(env, "--via", via, "--count", "3")
    assert result["before_commit"] == 0, "published before the transaction committed"
    assert result["after_commit"] == 3
    assert [m for _, m in delivered(streams)] == [{"n": 0}, {"n": 1}, {"n": 2}]


@pytest.mark.parametrize("via", ["sync", "async"])
def test_a_publish_inside_a_rolled_back_atomic_block_reaches_nobody(env, streams, via):
    result = commit_publish(env, "--via", via, "--count", "3", "--rollback")
    assert result == {"before_commit": 0, "after_commit": 0, "rows": []}
    assert delivered(streams) == []


def test_a_savepoint_that_rolls_back_drops_only_what_was_published_inside_it(env, streams):
    result = commit_publish(env, "--count", "4", "--savepoint-rollback")
    assert result["after_commit"] == 2
    assert [m for _, m in delivered(streams)] == [{"n": 0}, {"n": 1}]


# -- the outbox --------------------------------------------------------------------------------------------


def test_a_rolled_back_outbox_write_leaves_no_row_and_the_worker_publishes_nothing(env, streams):
    result = commit_publish(env, "--via", "outbox", "--count", "3", "--rollback")
    assert len(result["rows"]) == 3  # written, then rolled back
    assert rows(env) == []
    assert "Published 0 message(s)" in manage(env, "realtime_outbox", "--once").stdout
    assert delivered(streams) == []


def test_a_committed_outbox_row_is_published_once_by_the_worker_with_its_id(env, streams):
    result = commit_publish(env, "--via", "outbox", "--count", "5")
    assert result["before_commit"] == result["after_commit"] == 0  # a row, not a publish
    assert "Published 5 message(s)" in manage(env, "realtime_outbox", "--once").stdout
    assert "Published 0 message(s)" in manage(env, "realtime_outbox", "--once").stdout  # marked: not again
    entries = delivered(streams)
    assert [m for _, m in entries] == [{"n": n, "outbox_id": row} for n, row in enumerate(result["rows"])]
    marked = rows(env)
    assert all(r["processed"] and not r["error"] for r in marked)
    assert [r["message_id"] for r in marked] == [stream_id for stream_id, _ in entries]  # the ids the API returned


def test_a_worker_killed_between_publish_and_mark_is_followed_by_one_more_delivery_the_consumer_can_tell(
        env, streams, tmp_path):
    written = commit_publish(env, "--via", "outbox", "--count", "10")["rows"]
    # One batch of 10 at 4 messages a second: the batch's rows are marked only after the last is published.
    slow = worker(env, tmp_path / "slow.log", "--batch", "10", "--rate", "4")
    try:
        wait_until(lambda: len(delivered(streams)) >= 3, timeout=30, message="three rows published by the slow worker")
        slow.send_signal(signal.SIGKILL)
        slow.wait(10)
    finally:
        stop(slow)
    before_crash = [m["outbox_id"] for _, m in delivered(streams)]
    assert 3 <= len(before_crash) < 10
    assert not any(r["processed"] for r in rows(env)), "rows marked although their transaction never committed"

    assert "Published 10 message(s)" in manage(env, "realtime_outbox", "--once").stdout
    seen = [m["outbox_id"] for _, m in delivered(streams)]
    counts = Counter(seen)
    assert set(counts) == set(written), "a row was never delivered"
    assert {row for row, n in counts.items() if n == 2} == set(before_crash)  # those, once more each
    assert max(counts.values()) == 2
    assert seen == before_crash + written  # in order, each time
    # A consumer that remembers the ids it handled drops the replays and sees each row once.
    handled: set[int] = set()
    fresh = [row for row in seen if not (row in handled or handled.add(row))]
    assert fresh == written
    assert all(r["processed"] for r in rows(env))


def test_two_workers_publish_each_row_once_in_order_per_channel(env, streams, tmp_path, request):
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    workers = [worker(env, log, "--batch", "5", "--rate", "400") for log in logs]
    try:
        for log in logs:
            wait_until(lambda log=log: "Outbox worker started" in log.read_text(), timeout=30, message="a worker up")
        written = commit_publish(env, "--via", "outbox", "--count", "400", "--channels", "4")["rows"]
        total = lambda: sum(len(delivered(streams, name)) for name in CHANNELS)  # noqa: E731
        wait_until(lambda: total() >= 400, timeout=60, message="400 rows published")
    finally:
        for process in workers:
            stop(process)
    seen = {name: [m["outbox_id"] for _, m in delivered(streams, name)] for name in CHANNELS}
    assert sorted(row for ids in seen.values() for row in ids) == sorted(written), "a row published twice or never"
    for name, ids in seen.items():
        assert ids == sorted(ids), f"{name} out of order"
        assert len(ids) == 100
    shares = [int(log.read_text().rsplit("Published ", 1)[1].split()[0]) for log in logs]
    assert sum(shares) == 400
    if request.node.callspec.params["env"] == "postgres":
        # SKIP LOCKED lets both work at once. SQLite serialises them on its write lock, which promises
        # no fairness: one worker may take every batch (CI saw [400, 0]), and that is still correct.
        assert all(share > 0 for share in shares), f"one worker did everything: {shares}"
    assert all(r["processed"] for r in rows(env))


def test_the_worker_refuses_to_mark_rows_when_nothing_reaches_other_processes(env, streams):
    commit_publish(env, "--via", "outbox", "--count", "1")
    local = {k: v for k, v in env.items() if k != "REDIS_URL"}
    result = manage(local, "realtime_outbox", "--once", check=False)
    assert result.returncode == 1
    assert "reaches no other process" in result.stderr
    assert not any(r["processed"] for r in rows(env))


def test_the_demos_trade_is_saved_with_its_outbox_row_and_published_by_the_worker(env, streams):
    streams.delete(history_key("trades"))
    trade = json.loads(manage(env, "place_trade", "plain", "R_100", "buy", "10").stdout)
    saved = manage(env, "shell", "-c", "from project.trading.models import Trade; "
                   f"print(Trade.objects.filter(trade_id={trade['trade_id']!r}).count())").stdout
    assert saved.split()[-1] == "1"
    assert streams.xlen(history_key("trades")) == 0  # a row, not yet a publish
    [row] = [r for r in rows(env) if r["channel"] == "trades"]
    assert "Published 1 message(s)" in manage(env, "realtime_outbox", "--once").stdout
    [(_, published)] = [(i, json.loads(f[b"m"])) for i, f in streams.xrange(history_key("trades"))]
    assert published == {**trade, "outbox_id": row["id"]}
