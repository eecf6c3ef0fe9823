"""The trading demo app: order validation, the one-simulator lock, and its endpoints on a live daphne.

Multi-process behaviour (nginx, two daphne, Redis) is in test_nginx.py; the page in test_browser.py.
"""

from __future__ import annotations

import asyncio
import json
import re
from decimal import Decimal

import httpx
import pytest
import websockets
from django.contrib.auth import get_user_model
from django.test import TestCase
from websockets.exceptions import ConnectionClosed

from project.trading import market
from project.trading.channels import ticks, trades
from project.trading.trades import InvalidOrder, validate_order
from realtime.pubsub import ids
from realtime.sealed_ids import TOKEN_LENGTH
from realtime.testing import SSEClient, publish, token_for
from tests.conftest import Live
from tests.isolation import redis_db
from tests.servers import Daphne, prepare_database, redis_available, require, which
from tests.sse_client import SSE
from tests.waiting import asettled, live_subscribers, quiet_subscribers

pytestmark = pytest.mark.timeout(60)


# -- orders ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"symbol": "XAU", "side": "buy", "amount": "1"}, "symbol"),
        ({"symbol": "R_10", "side": "hold", "amount": "1"}, "side"),
        ({"symbol": "R_10", "side": "buy", "amount": "-1"}, "amount"),
        ({"symbol": "R_10", "side": "buy", "amount": "NaN"}, "amount"),
        ({"symbol": "R_10", "side": "buy", "amount": "1e9"}, "amount"),
        ({"symbol": "R_10", "side": "buy", "amount": "0.001"}, "amount"),
        ({"symbol": "R_10", "side": "buy", "amount": None}, "amount"),
        ({"symbol": "R_10", "side": "buy", "amount": "ten"}, "amount"),
        (["R_10", "buy", "1"], "non_field_errors"),
    ],
)
def test_invalid_orders_are_refused_field_by_field(data, field):
    with pytest.raises(InvalidOrder) as refused:
        validate_order(data)
    assert field in refused.value.errors


def test_valid_order_is_normalised():
    assert validate_order({"symbol": "R_50", "side": "sell", "amount": 12.5}) == ("R_50", "sell", Decimal("12.50"))


def test_prices_move_and_keep_the_symbols_decimals():
    import random

    rng = random.Random(1)
    for symbol in market.SYMBOLS.values():
        price = symbol.start
        for _ in range(100):
            new = market.next_price(symbol, price, rng)
            assert new > 0
            assert round(new, symbol.decimals) == new
            price = new
        assert price != symbol.start


# -- one simulator for the deployment ---------------------------------------------------------------


async def test_only_the_lock_holder_simulates_and_another_takes_over(settings, monkeypatch):
    require(redis_available(), "Redis on 127.0.0.1:6379")
    from redis import asyncio as aioredis

    settings.REDIS_URL = f"redis://127.0.0.1:6379/{redis_db()}"
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    await client.flushdb()
    # Short lock times, so the test sees several renewals and a takeover quickly.
    monkeypatch.setattr(market, "LOCK_TTL_MS", 1200)
    monkeypatch.setattr(market, "RENEW_EVERY", 0.3)
    monkeypatch.setattr(market, "RETRY_EVERY", 0.2)
    monkeypatch.setattr(market, "TICK_INTERVAL", 0.1)

    first, second = market.MarketSimulator(), market.MarketSimulator()  # two "processes"
    received: list[dict] = []

    async def watch():
        async for tick in ticks.subscribe():
            received.append(tick)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    first.acquire()
    second.acquire()
    second.acquire()  # two subscribers in the second process
    try:
        await asyncio.sleep(2.0)  # time under test: longer than the lock's TTL, so it must have been renewed
        assert [first.leader, second.leader].count(True) == 1
        leader, follower = (first, second) if first.leader else (second, first)
        assert len({t["sim"] for t in received}) == 1, "a single simulator ran"
        assert await client.ttl(market.LOCK_KEY) > 0
        seq_before = max(t["seq"] for t in received)

        # The leader's process loses its last subscriber: it stops and frees the lock at once.
        for _ in range(leader.subscribers):
            leader.release()

        def taken_over():
            symbols = {t["symbol"] for t in received if t["sim"] == follower.instance}
            return follower.leader and not leader.leader and symbols == set(market.SYMBOLS)

        await asettled(taken_over, bool, 10)
        assert follower.leader and not leader.leader
        after = [t for t in received if t["sim"] == follower.instance]
        assert after, "the other process took over"
        assert min(t["seq"] for t in after) > seq_before, "the sequence continues across the takeover"
        # One tick per symbol per round.
        assert {t["symbol"] for t in after} == set(market.SYMBOLS)
    finally:
        for simulator in (first, second):
            while simulator.subscribers:
                simulator.release()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await asettled(lambda: client.exists(market.LOCK_KEY), lambda found: found == 0, 10)
        assert await client.exists(market.LOCK_KEY) == 0, "the lock is released when nobody simulates"
        await client.flushdb()
        await client.aclose()


# -- endpoints on a live daphne (one process, in-memory layer and history) ---------------------------


async def test_ticks_of_the_chosen_symbol_only(live):
    async with websockets.connect(f"{live.ws}/api/trading/ws/ticks/R_10", open_timeout=5) as ws:
        got = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(3)]
    assert {t["symbol"] for t in got} == {"R_10"}
    assert [t["seq"] for t in got] == sorted({t["seq"] for t in got})


async def test_unknown_symbol_is_closed_with_4004(live):
    async with websockets.connect(f"{live.ws}/api/trading/ws/ticks/DOGE", open_timeout=5) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd.code == 4004


async def test_orders_need_a_token_and_valid_fields(live):
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        assert (await client.post("/api/trading/orders", json={})).status_code == 401
        headers = {"Authorization": f"Bearer {live.token('plain')}"}
        bad = await client.post("/api/trading/orders", json={"symbol": "R_10", "side": "up"}, headers=headers)
        assert bad.status_code == 400
        assert set(bad.json()) == {"side", "amount"}
        me = await client.get("/api/trading/me", headers=headers)
        assert me.json() == {"id": live.users["plain"], "username": "plain", "is_staff": False}


async def test_trade_events_are_the_owners_only_and_resume_after_last_event_id(live):
    plain, owner2 = live.users["plain"], live.users["owner2"]
    token = live.token("plain")
    async with httpx.AsyncClient(base_url=live.url, timeout=httpx.Timeout(10, read=5)) as client:
        assert (await client.get(f"/api/trading/events/{plain}")).status_code == 401
        assert (await client.get(f"/api/trading/events/{owner2}?token={token}")).status_code == 403

        async def order(user_token, amount):
            response = await client.post(
                "/api/trading/orders",
                json={"symbol": "R_100", "side": "buy", "amount": amount},
                headers={"Authorization": f"Bearer {user_token}"},
            )
            assert response.status_code == 201
            return response.json()

        async def events(count, last_event_id=None):
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            found, frame = [], {}
            async with client.stream("GET", f"/api/trading/events/{plain}?token={token}", headers=headers) as stream:
                async for line in stream.aiter_lines():
                    if line == "" and "data" in frame:
                        found.append(frame)
                        frame = {}
                        if len(found) == count:
                            return found
                    elif line and not line.startswith(":"):
                        name, _, value = line.partition(": ")
                        frame[name] = value
            return found

        before = await quiet_subscribers(live.server, trades.name)
        reader = asyncio.create_task(events(3))
        await live_subscribers(live.server, trades.name, before + 1)
        placed = [await order(token, "1"), await order(live.token("owner2"), "2"), await order(token, "3")]
        placed.append(await order(token, "4"))
        seen = await asyncio.wait_for(reader, 10)
        mine = [placed[0], placed[2], placed[3]]
        assert [json.loads(f["data"])["trade_id"] for f in seen] == [t["trade_id"] for t in mine]
        assert {f["event"] for f in seen} == {"trade"}

        resumed = await asyncio.wait_for(events(2, last_event_id=seen[0]["id"]), 10)
        assert [json.loads(f["data"])["trade_id"] for f in resumed] == [placed[2]["trade_id"], placed[3]["trade_id"]]


# -- per-user trade streams: ids that say nothing of anyone else's trades, on both history backends ---


@pytest.fixture(scope="module", params=["memory", "redis"])
def trading(request, tmp_path_factory, output_dir):
    """A daphne with the trades Channel's history in memory, or in a Redis Stream of a private Redis."""
    from tests.test_channel_redis import RedisServer

    extra, redis = {}, None
    if request.param == "redis":
        require(which("redis-server") is not None, "redis-server")
        redis = RedisServer(tmp_path_factory.mktemp("trading-redis")).start()
        extra["REDIS_URL"] = redis.url
    env, users = prepare_database(tmp_path_factory.mktemp(f"trading-{request.param}"), extra)
    server = Daphne(env, output_dir / f"daphne-trading-{request.param}.log").start()
    try:
        yield Live(server, users)
    finally:
        server.stop()
        if redis is not None:
            redis.stop()


async def test_trade_ids_reveal_nothing_of_other_users_and_resume_exactly(trading):
    alice, bob = trading.users["plain"], trading.users["owner2"]
    tokens = {"alice": trading.token("plain"), "bob": trading.token("owner2")}

    def stream(user_id, who, last_event_id=None):
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        return SSE(f"{trading.url}/api/trading/events/{user_id}?token={tokens[who]}", headers)

    async def order(who, amount):
        async with httpx.AsyncClient(base_url=trading.url, timeout=10) as client:
            response = await client.post("/api/trading/orders", json={"symbol": "R_100", "side": "buy",
                                         "amount": amount}, headers={"Authorization": f"Bearer {tokens[who]}"})
        assert response.status_code == 201, response.text
        return response.json()["trade_id"]

    before = await quiet_subscribers(trading.server, trades.name)
    async with stream(alice, "alice") as on_alice, stream(bob, "bob") as on_bob:
        await live_subscribers(trading.server, trades.name, before + 2)
        bob_first = await order("bob", "1")
        first = await on_bob.next()
        alice_trades = [await order("alice", str(n)) for n in (2, 3, 4)]
        seen_by_alice = [await on_alice.next() for _ in alice_trades]
        bob_second = await order("bob", "5")
        second = await on_bob.next()
        with pytest.raises(TimeoutError):
            await on_bob.next(timeout=0.5)  # alice's trades sent bob nothing at all
    assert [e["data"]["trade_id"] for e in (first, second)] == [bob_first, bob_second]
    assert [e["data"]["trade_id"] for e in seen_by_alice] == alice_trades

    # Opaque: the same length, no history id in them, nothing to subtract or compare across users.
    every = [first["id"], second["id"], *(e["id"] for e in seen_by_alice)]
    assert {len(i) for i in every} == {TOKEN_LENGTH} and len(set(every)) == 5
    assert all(ids.parse(i) is None for i in every)

    # Bob cannot use alice's id: it does not open on his stream (reset, then his own history).
    async with stream(bob, "bob", seen_by_alice[0]["id"]) as resumed:
        reset = await resumed.next()
        assert reset["event"] == "reset" and reset["data"] == {"missed": None, "last_id": seen_by_alice[0]["id"]}
        assert [(await resumed.next())["data"]["trade_id"] for _ in range(2)] == [bob_first, bob_second]
    # Nor alice bob's.
    async with stream(alice, "alice", first["id"]) as resumed:
        assert (await resumed.next())["event"] == "reset"

    # Bob away: alice trades, bob trades twice (from another client); his resume replays exactly those two.
    await order("alice", "6")
    missed = [await order("bob", "7")]
    await order("alice", "8")
    missed.append(await order("bob", "9"))
    async with stream(bob, "bob", second["id"]) as resumed:
        replay = [await resumed.next() for _ in missed]
        assert [(e["event"], e["data"]["trade_id"]) for e in replay] == [("trade", t) for t in missed]
        assert {e["data"]["user_id"] for e in replay} == {bob}
        with pytest.raises(TimeoutError):
            await resumed.next(timeout=0.5)  # nothing doubled, nothing of alice's
    # A resume with the id of his first trade: his second, then the two he missed (the same ids as live).
    async with stream(bob, "bob", first["id"]) as resumed:
        again = [await resumed.next() for _ in range(3)]
    assert [e["data"]["trade_id"] for e in again] == [bob_second, *missed]
    assert again[0]["id"] == second["id"] and [e["id"] for e in again[1:]] == [e["id"] for e in replay]


# -- the price lookup while Redis is away ---------------------------------------------------------


def test_the_price_lookup_reports_an_unreachable_redis_as_broker_unavailable(settings):
    from realtime import BrokerUnavailable
    from tests.servers import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with pytest.raises(BrokerUnavailable, match="price lookup"):
        market.current_price("R_100")


async def test_the_price_lookup_refuses_to_block_the_event_loop(settings):
    from django.core.exceptions import SynchronousOnlyOperation

    settings.REDIS_URL = f"redis://127.0.0.1:6379/{redis_db()}"
    with pytest.raises(SynchronousOnlyOperation):
        market.current_price("R_100")


# -- the same endpoints in-process, through the project's routers (realtime.testing) -------------------


async def test_unknown_symbol_is_closed_with_4004_in_process(realtime_websocket):
    ws = await realtime_websocket("/api/trading/ws/ticks/DOGE")
    await ws.assert_closed(4004, re.compile("^Unknown symbol"))


class TradeEventsInProcess(TestCase):
    """The owner-only trade stream and its resume, on rows of the test's rolled-back transaction."""

    @classmethod
    def setUpTestData(cls):
        User = get_user_model()
        cls.owner, cls.other = User.objects.create_user("trader1"), User.objects.create_user("trader2")

    async def test_only_the_owner_streams_and_a_reconnect_resumes_after_last_event_id(self):
        token = token_for(self.owner)
        async with SSEClient(f"/api/trading/events/{self.other.pk}", token=token) as denied:
            denied.assert_status(403)
        async with SSEClient(f"/api/trading/events/{self.owner.pk}") as anonymous:
            anonymous.assert_status(401)

        async with SSEClient(f"/api/trading/events/{self.owner.pk}", token=token) as stream:
            for trade_id, user in (("t1", self.owner), ("t2", self.other), ("t3", self.owner)):
                await publish(trades, {"trade_id": trade_id, "user_id": user.pk})
            first = await stream.assert_event("trade", {"trade_id": "t1", "user_id": self.owner.pk})
            await stream.assert_event("trade", {"trade_id": "t3", "user_id": self.owner.pk})
            await stream.assert_no_event()
        async with SSEClient(f"/api/trading/events/{self.owner.pk}", token=token, last_event_id=first.id) as resumed:
            await resumed.assert_event("trade", {"trade_id": "t3", "user_id": self.owner.pk})
