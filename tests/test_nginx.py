"""The trading demo behind a real nginx in front of two daphne processes sharing Redis (REDIS_URL).

WebSocket upgrades through nginx, SSE events that leave one by one, trades and ticks that cross
processes, exactly one market simulator, and an access log that never records a token.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
from pathlib import Path

import httpx
import jwt
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from realtime.pubsub import ids
from realtime.sealed_ids import TOKEN_LENGTH
from tests.isolation import redis_db
from tests.servers import free_port
from tests.sse_client import SSE
from tests.stack import Nginx, Stack, require_stack

pytestmark = pytest.mark.timeout(120)

TICKS = "/api/trading/ws/ticks"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, output_dir):
    stack = Stack("nginx", db=redis_db(), tmp=tmp_path_factory.mktemp("nginx"), output_dir=output_dir)
    try:
        yield stack.start()
    finally:
        stack.stop()


def stream_url(base: str, user_id: int, token: str) -> str:
    return f"{base}/api/trading/events/{user_id}?token={token}"


async def collect_ticks(url: str, count: int, barrier: asyncio.Barrier | None = None) -> list[dict]:
    """``count`` ticks from ``url``; with ``barrier``, stay connected until every party has its ticks."""
    async with websockets.connect(url, open_timeout=10) as ws:
        ticks = []
        while len(ticks) < count:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message.get("type") != "ping":
                ticks.append(message)
        if barrier is not None:
            await asyncio.wait_for(barrier.wait(), 20)
        return ticks


async def collect_together(urls: list[str], count: int) -> list[list[dict]]:
    barrier = asyncio.Barrier(len(urls))
    return await asyncio.gather(*(collect_ticks(url, count, barrier) for url in urls))


def upstreams(lines: list[str]) -> set[str]:
    return {re.search(r"upstream=(\S+)", line)[1] for line in lines}


def test_page_and_static_files_are_served(stack):
    page = httpx.get(f"{stack.url}/", timeout=10)
    assert page.status_code == 200
    assert "trading demo" in page.text
    assert "/static/trading/app.js" in page.text
    script = httpx.get(f"{stack.url}/static/realtime/realtime.js", timeout=10)
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "export function follow" in script.text
    # Served by nginx from the collectstatic directory: daphne (DEBUG off) has no /static/ route.
    assert httpx.get(f"{stack.a.url}/static/realtime/realtime.js", timeout=10).status_code == 404


async def test_websocket_upgrade_through_nginx_and_ticks_on_both_backends(stack):
    token = stack.token("alice")
    through_nginx = [f"{stack.nginx.ws_url}{TICKS}/R_100?token={token}"] * 2
    direct = [f"{server.ws_url}{TICKS}/R_100" for server in (stack.a, stack.b)]
    results = await collect_together(through_nginx + direct, 4)

    for ticks in results:
        assert {t["symbol"] for t in ticks} == {"R_100"}
        seqs = [t["seq"] for t in ticks]
        assert seqs == sorted(set(seqs)), f"ticks out of order or doubled: {ticks}"
    # One simulator for the whole deployment: every client on either backend sees the same ticks.
    assert len({t["sim"] for ticks in results for t in ticks}) == 1
    by_seq: dict[int, float] = {}
    for tick in (t for ticks in results for t in ticks):
        assert by_seq.setdefault(tick["seq"], tick["price"]) == tick["price"]
    # nginx round-robins: the two upgrades through it went to different daphne processes.
    lines = stack.nginx.wait_for_log(f"GET {TICKS}/R_100 HTTP/1.1\" 101", count=2)
    assert len(lines) == 2
    assert upstreams(lines) == {f"127.0.0.1:{stack.a.port}", f"127.0.0.1:{stack.b.port}"}


async def test_sse_events_arrive_one_by_one_through_nginx(stack):
    alice = stack.user_ids["alice"]
    async with SSE(stream_url(stack.url, alice, stack.token("alice"))) as sse:
        assert sse.response.status_code == 200
        assert sse.response.headers["content-type"].startswith("text/event-stream")
        first = await asyncio.to_thread(stack.order, "alice", "R_10", "buy", "1")
        event = await sse.next(timeout=5)
        # The first event is here while the response is still open: nothing buffered it to the end.
        assert not sse.response.is_closed
        assert event["event"] == "trade"
        assert event["data"]["trade_id"] == first["trade_id"]
        second = await asyncio.to_thread(stack.order, "alice", "R_50", "sell", "2")
        assert (await sse.next(timeout=5))["data"]["trade_id"] == second["trade_id"]
        assert not sse.response.is_closed


async def test_trade_placed_on_backend_a_reaches_the_stream_held_on_backend_b(stack):
    alice = stack.user_ids["alice"]
    token = stack.token("alice")
    async with SSE(stream_url(stack.b.url, alice, token)) as on_b:
        trade = await asyncio.to_thread(stack.order, "alice", "R_100", "buy", "3", stack.a.url)
        event = await on_b.next(timeout=5)
        assert event["data"] == trade
        # Sealed (the stream is one user's): opaque, and no Redis stream id to read the others' trades from.
        assert len(event["id"]) == TOKEN_LENGTH and ids.parse(event["id"]) is None

    # The same through nginx: two streams and a trade placed through nginx.
    async with SSE(stream_url(stack.url, alice, token)) as one, SSE(stream_url(stack.url, alice, token)) as two:
        trade = await asyncio.to_thread(stack.order, "alice", "R_10", "sell", "4")
        first, second = await one.next(timeout=5), await two.next(timeout=5)
        assert first["data"]["trade_id"] == second["data"]["trade_id"] == trade["trade_id"]
        assert first["id"] == second["id"]
    lines = stack.nginx.wait_for_log(f"GET /api/trading/events/{alice} HTTP/1.1\" 200")
    # Which backend nginx picked depends on the other requests in flight; both are in the upstream.
    assert upstreams(lines) <= {f"127.0.0.1:{stack.a.port}", f"127.0.0.1:{stack.b.port}"}


async def test_owner_rule_and_resume_with_last_event_id(stack):
    alice, editor = stack.user_ids["alice"], stack.user_ids["editor"]
    # Another user's stream is refused, and with a status EventSource does not retry.
    refused = httpx.get(stream_url(stack.url, alice, stack.token("editor")), timeout=10)
    assert refused.status_code == 403
    assert "event: error" in refused.text

    async with SSE(stream_url(stack.url, alice, stack.token("alice"))) as live:
        placed = [await asyncio.to_thread(stack.order, "alice", "R_100", "buy", str(n)) for n in (5, 6, 7)]
        seen = [await live.next(timeout=5) for _ in placed]
        assert [e["data"]["trade_id"] for e in seen] == [t["trade_id"] for t in placed]
        await asyncio.to_thread(stack.order, "editor", "R_100", "buy", "99")  # not alice's: never shown
        mine = await asyncio.to_thread(stack.order, "alice", "R_100", "sell", "8")
        assert (await live.next(timeout=5))["data"]["trade_id"] == mine["trade_id"]
    assert editor != alice

    # Reconnect after the first of the three: exactly what came after it, then nothing doubled.
    first_id = seen[0]["id"]
    async with SSE(stream_url(stack.url, alice, stack.token("alice")), headers={"Last-Event-ID": first_id}) as resumed:
        replay = [await resumed.next(timeout=5) for _ in range(3)]
        assert [e["data"]["trade_id"] for e in replay] == [placed[1]["trade_id"], placed[2]["trade_id"],
                                                          mine["trade_id"]]
        assert all(e["data"]["user_id"] == alice for e in replay)
        with pytest.raises(TimeoutError):
            await resumed.next(timeout=1)  # nothing doubled


async def test_access_and_error_logs_never_record_a_token(stack):
    alice = stack.user_ids["alice"]
    token = stack.token("alice")
    await collect_ticks(f"{stack.nginx.ws_url}{TICKS}/R_50?token={token}", 1)
    async with SSE(f"{stream_url(stack.url, alice, token)}&lastEventId=0-0") as sse:
        await sse.next(timeout=5)
    httpx.get(f"{stack.url}/api/trading/me?token={token}", timeout=10)
    assert stack.nginx.wait_for_log(f"GET {TICKS}/R_50 ")
    assert stack.nginx.wait_for_log(f"GET /api/trading/events/{alice} ")
    assert stack.nginx.wait_for_log("GET /api/trading/me ")
    logs = stack.nginx.access_log() + stack.nginx.error_log()
    assert len(stack.tokens) > 5
    for issued in stack.tokens:
        assert issued not in logs
        assert issued.split(".")[2] not in logs  # not even the signature
    assert "token=" not in logs
    assert "?" not in stack.nginx.access_log()


async def test_upstream_failures_are_in_the_error_log_and_tokens_are_not():
    """nginx in front of a backend that is down: every request fails upstream (502)."""
    run_dir = Path(tempfile.mkdtemp(prefix="realtime-down-"))
    run_dir.chmod(0o755)  # nginx's workers may run as "nobody"
    (run_dir / "static").mkdir()
    nginx = Nginx(require_stack(), run_dir, [free_port()], run_dir / "static").start()
    secrets = ["eyJ.plain.secret", "eyJ.access.secret", "eyJ.encoded.secret", "eyJ.ws.secret"]
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.get(f"{nginx.url}/api/down/plain?page=2")).status_code == 502
            for path in (f"/api/down/events?token={secrets[0]}", f"/api/down/x?a=1&ACCESS_TOKEN={secrets[1]}",
                         f"/api/down/y?%74oken={secrets[2]}"):
                assert (await client.get(f"{nginx.url}{path}")).status_code == 502
            # The body limit holds for them too (client_max_body_size 1m).
            big = await client.post(f"{nginx.url}/api/down/big?token={secrets[0]}", content=b"x" * (2 << 20))
            assert big.status_code == 413
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(f"{nginx.ws_url}/api/down/ws?token={secrets[3]}", open_timeout=10)
        assert refused.value.response.status_code == 502
        for path in ("/api/down/plain", "/api/down/events", "/api/down/x", "/api/down/y", "/api/down/ws"):
            assert await asyncio.to_thread(nginx.wait_for_log, f"{path} HTTP/1.1\" 502")
    finally:
        nginx.stop()
        errors, access = nginx.error_log(), nginx.access_log()
        shutil.rmtree(run_dir, ignore_errors=True)
    # The failure of the request without a token is logged, with its reason, at level "error" (was "crit").
    failure = [line for line in errors.splitlines() if "/api/down/plain" in line]
    assert failure and "[error]" in failure[0] and "connect() failed" in failure[0], errors
    # Requests that carried a token left no error message (it would hold the token), only access-log lines.
    for secret in secrets:
        assert secret not in errors and secret not in access
    assert "token" not in errors.lower()
    assert access.count("upstream_status=502") == 5


def test_a_token_forged_with_the_public_demo_key_is_refused(stack):
    """DEBUG is off here, as in `make run-prod`: the key is the random one scripts/secret-key keeps."""
    demo_key = "demo-only-insecure-key-change-me-in-production-0123456789"  # public: it is in the repository
    claims = jwt.decode(stack.token("alice"), options={"verify_signature": False})
    forged = jwt.encode({**claims, "user_id": str(stack.user_ids["admin"])}, demo_key, algorithm="HS256")
    response = httpx.get(f"{stack.url}/api/trading/me", headers={"Authorization": f"Bearer {forged}"}, timeout=10)
    assert response.status_code == 401
    assert stack.get("/api/trading/me", "admin").json()["id"] == stack.user_ids["admin"]
