"""The shipped nginx as the edge: addresses it sets itself, WebSockets by Upgrade header, slow handshakes bounded.

A stack of its own (tests/stack.py): nginx with a 3 s header timeout in front of two daphne started by
scripts/daphne-prod, serving the demo project plus tests/liveapp, with a cap of 3 WebSockets per address
and process. ``X-Forwarded-For`` counts only from ``REALTIME["TRUSTED_PROXIES"]`` (loopback 127.0.0.1 by
default: nginx here); clients that are not a trusted proxy connect from 127.0.0.2.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.isolation import redis_db
from tests.servers import require_untrusted_loopback
from tests.stack import Stack
from tests.waiting import alog_line

pytestmark = pytest.mark.timeout(180)

HEADER_TIMEOUT = 3
FORGED = "203.0.113."  # TEST-NET-3: no client of this machine has such an address


@pytest.fixture(scope="module")
def stack(tmp_path_factory, output_dir):
    stack = Stack("edge", db=redis_db(), tmp=tmp_path_factory.mktemp("edge"), output_dir=output_dir,
                  settings="tests.edge_settings", header_timeout=f"{HEADER_TIMEOUT}s")
    try:
        yield stack.start()
    finally:
        stack.stop()


async def test_a_websocket_route_without_a_ws_segment_works_through_nginx(stack):
    async with websockets.connect(f"{stack.nginx.ws_url}/api/t/ws-news", open_timeout=10) as ws:
        await ws.send(json.dumps({"headline": "upgrade rule"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"echo": {"headline": "upgrade rule"}}
    assert stack.nginx.wait_for_log('"GET /api/t/ws-news HTTP/1.1" 101')
    # Plain requests on the same paths are still plain HTTP (no upgrade): daphne answers them.
    page = await asyncio.to_thread(stack.get, "/api/trading/me", "alice")
    assert page.json()["id"] == stack.user_ids["alice"]


async def echo_or_close(url: str, forged: str, held: list, source: str | None = None) -> str:
    """Connect with a forged client address (from ``source``); "served" when echoed, else the close code and reason."""
    headers = {"X-Forwarded-For": forged, "X-Real-IP": forged}
    local = {"local_addr": (source, 0)} if source else {}
    ws = await websockets.connect(url, additional_headers=headers, open_timeout=10, **local)
    held.append(ws)  # kept open until every connection has been counted
    try:
        await ws.send('"hi"')
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"echo": "hi"}
        return "served"
    except ConnectionClosed as closed:
        return f"{closed.rcvd.code} {closed.rcvd.reason}"


async def test_a_forged_forwarded_for_counts_against_the_real_address(stack):
    url = f"{stack.nginx.ws_url}/api/chat/ws/edge"
    held: list = []
    try:
        # 3 per process and 2 processes: of 7 connections from one real address, one at least is refused.
        outcomes = [await echo_or_close(url, f"{FORGED}{n}", held) for n in range(1, 8)]
    finally:
        await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)
    assert outcomes.count("served") <= 6
    assert "1008 Too many connections" in outcomes, outcomes
    assert set(outcomes) <= {"served", "1008 Too many connections"}
    # The logs show the real address, never the forged one.
    await alog_line(lambda: stack.a.log() + stack.b.log(), "WSDISCONNECT /api/chat/ws/edge")
    daphne_logs = stack.a.log() + stack.b.log()
    assert "127.0.0.1:" in daphne_logs and "WSCONNECT /api/chat/ws/edge" in daphne_logs
    assert len(stack.nginx.wait_for_log("GET /api/chat/ws/edge ", count=7)) == 7
    for log in (daphne_logs, stack.nginx.access_log(), stack.nginx.error_log()):
        assert FORGED not in log


async def test_a_forged_forwarded_for_straight_to_daphne_is_not_believed(stack):
    """The issue's attack: eight connections to daphne's own port, eight forged addresses, one cap."""
    source = require_untrusted_loopback()
    url = f"{stack.a.ws_url}/api/chat/ws/direct"
    held: list = []
    try:
        outcomes = [await echo_or_close(url, f"{FORGED}{n}", held, source) for n in range(1, 9)]
    finally:
        await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)
    # One process, a cap of 3 for the one real address: the fourth and every later one are refused.
    assert outcomes == ["served"] * 3 + ["1008 Too many connections"] * 5


async def client_seen(ws_url: str, http_url: str, headers: dict[str, str], source: str) -> tuple[dict, dict]:
    """What a WebSocket view and an SSE view (tests/liveapp ClientAddress*) report as the client."""
    async with websockets.connect(f"{ws_url}/api/t/address", additional_headers=headers, open_timeout=10,
                                  local_addr=(source, 0)) as ws:
        websocket = json.loads(await asyncio.wait_for(ws.recv(), 10))
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(transport=transport, timeout=10) as client:
        body = (await client.get(f"{http_url}/api/t/sse/address", headers=headers)).text
    sse = json.loads(next(line for line in body.splitlines() if line.startswith("data: "))[6:])
    return websocket, sse


async def test_views_see_the_client_nginx_saw_and_direct_peers_as_themselves(stack):
    source = require_untrusted_loopback()
    forged = {"X-Forwarded-For": f"{FORGED}9", "X-Forwarded-Proto": "https"}
    # Through nginx (trusted): the address nginx saw, never the forged one; nginx's own scheme.
    websocket, sse = await client_seen(stack.nginx.ws_url, stack.nginx.url, forged, source)
    assert websocket == {"client": source, "scheme": "ws"}
    assert sse == {"client": source, "scheme": "http"}
    # daphne's access log names that client too, not nginx (127.0.0.1): written at the handshake,
    # before the first message, so it is there already.
    lines = [line for line in (stack.a.log() + stack.b.log()).splitlines() if "WSCONNECT /api/t/address" in line]
    assert lines and all(line.startswith(f"{source}:") for line in lines), lines
    # Straight to daphne from an untrusted peer: the peer, and its headers ignored.
    websocket, sse = await client_seen(stack.b.ws_url, stack.b.url, forged, source)
    assert websocket == {"client": source, "scheme": "ws"}
    assert sse == {"client": source, "scheme": "http"}
    # A trusted peer (a proxy on this machine) is believed, right-most hop first.
    websocket, sse = await client_seen(stack.b.ws_url, stack.b.url,
                                       {"X-Forwarded-For": f"192.0.2.1, {FORGED}10", "X-Forwarded-Proto": "https"},
                                       "127.0.0.1")
    assert websocket == {"client": f"{FORGED}10", "scheme": "wss"}
    assert sse == {"client": f"{FORGED}10", "scheme": "https"}


async def trickle(port: int, request: bytes, give_up: float) -> float | None:
    """Send ``request`` one byte a second; seconds until the server closed, or None if still open at ``give_up``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    closed = asyncio.ensure_future(reader.read(65536))
    try:
        for byte in request:
            if closed.done() or time.monotonic() - started > give_up:
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.wait([closed], timeout=1)
        if not closed.done():
            return None
        try:
            assert closed.result() == b"", "the server answered a request it never got in full"
        except ConnectionError:
            pass  # reset_timedout_connection: nginx resets instead of closing
        return time.monotonic() - started
    finally:
        closed.cancel()
        writer.close()


async def test_handshakes_trickled_a_byte_a_second_are_closed_within_the_header_timeout(stack):
    request = (
        b"GET /api/t/echo/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    give_up = 20  # far above the 3 s bound, far below nginx's 60 s default
    times = await asyncio.gather(*(trickle(stack.nginx.port, request, give_up) for _ in range(5)))
    assert None not in times, f"still open after {give_up} s: {times}"
    assert all(t < give_up for t in times)
    # Each sent a few bytes at most: the whole upgrade (about 150 bytes) never reached daphne.
    assert "/api/t/echo/slow" not in stack.a.log() + stack.b.log()
