"""Limits, origin checks, expiring credentials, log hygiene and hostile input."""

import asyncio
import json
import threading
import time
from datetime import timedelta

import httpx
import pytest
import websockets
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from realtime import CloseCode, WebSocketView
from realtime.redaction import redact
from realtime.security import origin_allowed
from realtime.throttling import MessageRateThrottle, parse_rate
from tests.raw_ws import RawClient, frame
from tests.servers import Daphne, Uvicorn, prepare_database, require_untrusted_loopback
from tests.sse_client import text_until
from tests.test_websocket_live import forged
from tests.waiting import alog_line, quiet_live, settled
from tests.wire import rss_mib

pytestmark = pytest.mark.timeout(180)


class Echo(WebSocketView):
    keepalive = 0

    async def on_receive(self, ws, data):
        await ws.send_json(data)


async def close_code(communicator):
    message = await communicator.receive_output()
    assert message["type"] == "websocket.close", message
    return message["code"], message["reason"]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),
        ("http://127.0.0.1:8000", True),
        ("https://localhost", False),  # scheme and port count (tests/test_secure_defaults.py has the table)
        ("http://evil.example", False),
        ("null", False),
        ("http://127.0.0.1.evil.example", False),
    ],
)
def test_origin_policy_is_the_same_origin_by_default(origin, allowed):
    headers = {"host": "127.0.0.1:8000"} if origin is None else {"host": "127.0.0.1:8000", "origin": origin}
    assert origin_allowed(headers) is allowed


@override_settings(REALTIME={"ALLOW_MISSING_ORIGIN": False, "ALLOWED_ORIGINS": ["https://app.example.com"]})
def test_origin_policy_is_configurable():
    assert not origin_allowed({})
    assert origin_allowed({"origin": "https://app.example.com"})
    assert not origin_allowed({"origin": "http://app.example.com"})


async def test_foreign_origin_is_closed_with_1008_before_any_hook():
    communicator = WebsocketCommunicator(Echo.as_asgi(), "/ws", headers=[(b"origin", b"http://evil.example")])
    assert (await communicator.connect())[0]
    assert await close_code(communicator) == (1008, "Origin not allowed")


def test_rates_parse():
    assert parse_rate("20/s") == (20, 1.0)
    assert parse_rate("100/min") == (100, 60.0)
    with pytest.raises(ValueError, match="'20/s'"):
        parse_rate("fast")


async def test_message_rate_over_the_limit_closes_with_1008():
    class Slow(MessageRateThrottle):
        rate = "5/s"

    class Throttled(Echo):
        throttle_classes = [Slow]

    communicator = WebsocketCommunicator(Throttled.as_asgi(), "/ws")
    await communicator.connect()
    for i in range(6):
        await communicator.send_json_to(i)
    assert [await communicator.receive_json_from() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert await close_code(communicator) == (CloseCode.POLICY_VIOLATION, "Message rate exceeded")


@override_settings(REALTIME={"MAX_CONNECTIONS_PER_IP": 2})
async def test_connections_per_address_are_capped_and_released():
    app = Echo.as_asgi()

    async def from_one_address(scope, receive, send):
        await app({**scope, "client": ("192.0.2.7", 50000)}, receive, send)

    def client():
        return WebsocketCommunicator(from_one_address, "/ws")

    first, second, third = client(), client(), client()
    for communicator in (first, second, third):
        await communicator.connect()
    assert await close_code(third) == (1008, "Too many connections")
    await first.disconnect()  # returns once the application has ended, its cap released
    fourth = client()
    await fourth.connect()
    assert await fourth.receive_nothing(0.1)
    await second.disconnect()
    await fourth.disconnect()


@override_settings(REALTIME={"MAX_MESSAGE_SIZE": 8})
async def test_message_size_limit_comes_from_settings():
    communicator = WebsocketCommunicator(Echo.as_asgi(), "/ws")
    await communicator.connect()
    await communicator.send_to(text_data='"123456789"')
    assert (await close_code(communicator))[0] == CloseCode.MESSAGE_TOO_BIG


def test_tokens_are_redacted_from_access_log_paths():
    assert redact("/api/x?token=abc.def&lastEventId=4") == "/api/x?token=[redacted]&lastEventId=4"
    assert redact("/api/x?a=1&access_token=zzz") == "/api/x?a=1&access_token=[redacted]"


# -- on a real daphne ---------------------------------------------------------------------------


async def test_websocket_closes_4003_token_expired_when_its_token_expires(live):
    token = forged(live.users["plain"], lifetime=timedelta(seconds=2))
    async with websockets.connect(f"{live.ws}/api/t/private?token={token}") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(6):
                while True:
                    await ws.recv()
    assert closed.value.rcvd.code == 4003  # 4001 under STRICT_TOKENS: tests/test_auth_live.py
    assert closed.value.rcvd.reason.startswith("token_expired: ")


async def test_in_band_refresh_keeps_the_connection_open(live):
    token = forged(live.users["plain"], lifetime=timedelta(seconds=2))
    async with websockets.connect(f"{live.ws}/api/t/private?token={token}") as ws:
        await ws.send(json.dumps({"type": "realtime.refresh", "token": live.token("plain")}))
        reply = json.loads(await ws.recv())
        assert reply["type"] == "realtime.refresh" and reply["ok"] is True
        await asyncio.sleep(3)  # time under test: past the first token's 2 s lifetime
        await ws.send('"still here"')
        assert json.loads(await ws.recv())["msg"] == "still here"


async def test_refresh_with_another_users_token_closes_4003_user_mismatch(live):
    async with websockets.connect(f"{live.ws}/api/t/private?token={live.token('plain')}") as ws:
        await ws.send(json.dumps({"type": "realtime.refresh", "token": live.token("staff")}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd.code == 4003
    assert closed.value.rcvd.reason.startswith("user_mismatch: ")


async def test_refresh_on_an_anonymous_socket_says_there_is_no_user_to_refresh(live):
    async with websockets.connect(f"{live.ws}/api/t/hello/5") as ws:  # public, no token: anonymous
        assert json.loads(await ws.recv())["user"] is None
        await ws.send(json.dumps({"type": "realtime.refresh", "token": live.token("plain")}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd.code == 4003
    assert closed.value.rcvd.reason == ("not_authenticated: the connection has no user to refresh; "
                                        "reconnect with the token")


async def test_sse_stream_ends_with_an_error_event_when_its_token_expires(live):
    token = forged(live.users["plain"], lifetime=timedelta(seconds=2))
    async with httpx.AsyncClient(timeout=10) as client, client.stream(
        "GET", f"{live.url}/api/t/sse/forever?token={token}"
    ) as response:
        body = ""
        async with asyncio.timeout(8):
            async for chunk in response.aiter_text():
                body += chunk
    assert body.startswith(": connected\n\nevent: open\ndata: plain\n\n")
    assert body.endswith('event: error\ndata: {"code":"token_expired","detail":"Reconnect with a fresh token"}\n\n')


async def test_concurrent_sse_streams_per_user_are_capped(live):
    token = live.token("editor")
    async with httpx.AsyncClient(timeout=10) as client:
        streams = [client.stream("GET", f"{live.url}/api/t/sse/forever?token={token}") for _ in range(3)]
        opened = [await stream.__aenter__() for stream in streams]
        assert [r.status_code for r in opened] == [200, 200, 200]
        refused = await client.get(f"{live.url}/api/t/sse/forever?token={token}")
        assert refused.status_code == 429
        assert refused.reason_phrase == "Too Many Requests"
        assert "too_many_streams" in refused.text
        for stream in streams:
            await stream.__aexit__(None, None, None)
        await quiet_live(live.server)  # the three streams have ended on the server
        async with client.stream("GET", f"{live.url}/api/t/sse/forever?token={token}") as again:
            assert again.status_code == 200


async def test_no_token_reaches_daphnes_access_log(live):
    start = len(live.server.log())
    token = live.token("plain")
    async with httpx.AsyncClient(timeout=10) as client:
        await client.get(f"{live.url}/api/t/sse/owner/0?token={token}")
    async with websockets.connect(f"{live.ws}/api/t/private?token={token}") as ws:
        await ws.send('"x"')
        await ws.recv()
    await alog_line(live.server.log, "WSDISCONNECT /api/t/private", start)
    log = live.server.log()
    assert "token=[redacted]" in log
    assert token not in log
    assert token.split(".")[2] not in log


# -- hostile input, property-based, against the live server ----------------------------------------

frames = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    st.just("{" * 5000),
    st.just("[" * 100_000 + "]" * 100_000),
    st.integers(0, 3).map(lambda n: "x" * (2**20 + n)),  # over daphne's 1 MiB limit
    st.recursive(st.integers() | st.text(max_size=5), lambda c: st.lists(c, max_size=3), max_leaves=30).map(json.dumps),
)
tokens = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz.-_=", max_size=300),
    st.just("a" * 20000),
    st.just("eyJhbGciOiJub25lIn0.eyJ1c2VyX2lkIjoxfQ."),
)


@pytest.fixture(scope="module")
def log_start(live) -> int:
    """Where the shared server's log stood before the hostile input: earlier tests log on purpose."""
    return len(live.server.log())


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no minutes-long shrinking of huge frames
@given(frames=st.lists(frames, min_size=1, max_size=4), token=tokens,
       subprotocols=st.text(alphabet="abcxyz.-, ;=\t", max_size=40),
       last_event_id=st.text(max_size=100))
def test_hostile_input_never_crashes_the_server_nor_answers_500_or_1011(live, log_start, frames, token,
                                                                      subprotocols, last_event_id):
    asyncio.run(_hostile_round(live, frames, token, subprotocols, last_event_id))


async def _hostile_round(live, frames, token, subprotocols, last_event_id):
    try:
        headers = {"Sec-WebSocket-Protocol": subprotocols} if subprotocols.strip() else {}
        async with websockets.connect(
            f"{live.ws}/api/t/echo/h", additional_headers=headers, max_size=None, open_timeout=5
        ) as ws:
            for frame in frames:
                await ws.send(frame)
            async with asyncio.timeout(5):
                while True:
                    await ws.recv()
    except ConnectionClosed as closed:
        assert closed.rcvd is None or closed.rcvd.code != 1011
    except InvalidStatus as refused:
        assert refused.response.status_code < 500
    except TimeoutError:
        pass  # the server is still answering and has not closed: fine
    except InvalidHandshake as refused:  # e.g. the server selected no subprotocol the client offered
        assert "500" not in str(refused)
    async with httpx.AsyncClient(timeout=10) as client:
        safe_id = "".join(ch for ch in last_event_id if ch >= " " and ch != "\x7f")  # what HTTP can carry
        try:
            response = await client.get(
                f"{live.url}/api/t/sse/hello", params={"token": token},
                headers={"Last-Event-ID": safe_id.strip().encode("utf-8")},
            )
            assert response.status_code < 500
        except httpx.RemoteProtocolError:
            assert len(token) > 8000  # daphne drops a request line over its limit without answering
    try:
        async with websockets.connect(f"{live.ws}/api/t/private?token={token}", open_timeout=5) as ws:
            await asyncio.wait_for(ws.recv(), 5)
    except ConnectionClosed as closed:
        assert closed.rcvd.code in (4001, 4003)
    except InvalidStatus as refused:
        assert refused.response.status_code < 500
    except InvalidHandshake:
        assert len(token) > 8000


async def test_after_hostile_input_nothing_is_left_behind(live, log_start):
    # Runs after the property test in file order: the probe counts match a quiet server.
    async with websockets.connect(f"{live.ws}/api/t/stats") as ws:
        stats = json.loads(await ws.recv())
    assert stats["tick_channel"] == 0 and stats["history"] == 0 and stats["tick_hub"] == 0
    assert "Traceback" not in live.server.log()[log_start:]


async def test_logout_closes_the_users_websockets_and_sse_streams(live):
    token = live.token("staff")
    ws = await websockets.connect(f"{live.ws}/api/t/private?token={token}")
    async with httpx.AsyncClient(timeout=10) as client, client.stream(
        "GET", f"{live.url}/api/t/sse/forever?token={token}"
    ) as sse:
        body = sse.aiter_text()
        assert "event: open" in await text_until(body, "event: open")
        other = await websockets.connect(f"{live.ws}/api/t/private?token={live.token('plain')}")
        response = await client.post(f"{live.url}/api/auth/logout/", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(2):
                await ws.recv()
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4003, "session_revoked")
        async with asyncio.timeout(2):
            rest = "".join([chunk async for chunk in body])
        assert rest.endswith(
            'event: error\ndata: {"code":"session_revoked","detail":"Reconnect with a fresh token"}\n\n'
        )
        await other.send('"still connected"')  # another user's connection is untouched
        assert json.loads(await other.recv())["msg"] == "still connected"
        await other.close()


# -- inbound bytes: what a client makes the server hold before its view reads ---------------------


class Reading:
    """A server adapter's ReadControl, recorded."""

    def __init__(self):
        self.calls = []

    def pause(self):
        self.calls.append("pause")

    def resume(self):
        self.calls.append("resume")


def metered(key="192.0.2.9", budget=None, **limits):
    from realtime.inbound import InboundMeter
    from realtime.security import ByteBudget

    closed = []
    with override_settings(REALTIME={"MAX_INBOUND_BYTES": 1000, "MAX_INBOUND_BYTES_PER_IP": 4000, **limits}):
        meter = InboundMeter(key, closed.append, budget if budget is not None else ByteBudget())
    reading = Reading()
    meter.attach(reading)
    return meter, reading, closed


def test_a_connection_past_its_inbound_bytes_is_not_read_until_its_view_reads_half():
    meter, reading, closed = metered()
    meter.parsed(600)  # a message arriving: read on
    meter.charge(600)
    assert (meter.queued, meter.parsing, reading.calls) == (600, 0, [])
    meter.charge(550)
    assert meter.held == 1150 and reading.calls == ["pause"]
    meter.taken()
    assert reading.calls == ["pause", "pause"], "over half the limit: still not read"
    meter.taken()
    assert reading.calls[-1] == "resume" and not meter.paused and not closed


def test_a_connection_with_nothing_queued_is_always_read_so_a_big_message_can_arrive():
    meter, reading, closed = metered()
    meter.parsed(1500)  # bigger than MAX_INBOUND_BYTES, but nothing waits for the view
    assert reading.calls == [] and not closed
    meter.charge(1500)
    assert reading.calls == ["pause"]
    meter.taken()
    assert reading.calls == ["pause", "resume"]


def test_an_address_shares_one_budget_past_half_of_which_its_waiting_connections_are_not_read():
    from realtime.security import ByteBudget

    budget = ByteBudget()
    meters = [metered(budget=budget, MAX_INBOUND_BYTES=10000) for _ in range(3)]
    (first, first_reading, _), (second, second_reading, _), (third, _, third_closed) = meters
    first.charge(900)
    second.charge(900)
    assert budget.total("192.0.2.9") == 1800 and first_reading.calls == second_reading.calls == []
    second.charge(300)  # 2100: past half the address's 4000, its connections with messages waiting are not read
    first.charge(900)
    assert second_reading.calls == first_reading.calls == ["pause"] and budget.waiting == 2
    first.taken()  # 2100 still past half: both wait on
    assert first.paused and second.paused and budget.waiting == 2
    third.parsed(1000)  # a connection with nothing queued is read...
    assert not third_closed
    third.parsed(1900)  # ...until it takes the address to its whole budget: it is closed
    assert third_closed == ["Too much unread data from this address"]
    third.release()
    first.taken()  # 1200: under half, both are read again
    assert first_reading.calls[-1] == second_reading.calls[-1] == "resume" and budget.waiting == 0
    for meter, _, _ in meters:
        meter.release()
    assert budget.total("192.0.2.9") == 0 and budget.waiting == 0 and not budget.totals


def test_released_meters_give_every_byte_back_and_ignore_late_charges():
    meter, _, _ = metered()
    meter.charge(700)
    meter.release()
    meter.charge(700)
    meter.release()
    assert meter.held == 0 and meter.budget.total("192.0.2.9") == 0


@override_settings(REALTIME={"MAX_INBOUND_BYTES": 3000, "MESSAGE_RATE": None})
async def test_where_the_server_cannot_pause_a_push_only_view_past_its_inbound_bytes_closes_1008():
    """The in-process communicator is no server an adapter knows: only the view's inbox is counted."""

    class Pusher(WebSocketView):
        keepalive = 0

        async def _handle(self, ws):
            await ws.accept()
            await asyncio.Event().wait()  # pushes, never reads

    communicator = WebsocketCommunicator(Pusher.as_asgi(), "/ws")
    await communicator.connect()
    for _ in range(4):
        await communicator.send_to(text_data="x" * 1000)
    assert await close_code(communicator) == (CloseCode.POLICY_VIOLATION, "Too much unread data")
    await communicator.disconnect()


# -- inbound bytes on a real daphne and a real uvicorn, with the shipped limits ------------------

MIB = 1024 * 1024


@pytest.fixture(scope="module", params=[Daphne, Uvicorn], ids=["daphne", "uvicorn"])
def shipped_limits(request, tmp_path_factory, output_dir):
    """daphne or uvicorn (websockets-sansio) serving the project with the shipped inbound limits."""
    env, _ = prepare_database(tmp_path_factory.mktemp("inbound"))
    server = request.param(env, output_dir / f"{request.param.__name__.lower()}-inbound.log").start()
    yield server
    server.stop()


def server_stats(server) -> dict:
    with connect(f"{server.ws_url}/api/t/stats") as ws:
        return json.loads(ws.recv(timeout=10))


def megabyte_message(n: int = 0) -> bytes:
    """A JSON text frame of just under MAX_MESSAGE_SIZE (1 MiB), as a client sends it."""
    return frame(0x1, json.dumps({"n": n, "p": "x" * (MIB - 100)}).encode())


def send_at(client: RawClient, data: bytes, rate: float, until: float, sent: list[int], index: int,
            stop: threading.Event | None = None) -> None:
    """Send ``data`` ``rate`` times a second until ``until`` (or ``stop``), stopping at the first send
    that blocks past it."""
    try:
        while time.monotonic() < until and not (stop is not None and stop.is_set()):
            started = time.monotonic()
            client.sock.settimeout(max(0.05, until - started))
            client.send(data)
            sent[index] += 1
            time.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))  # pacing the sender, not waiting
    except OSError:  # blocked until the end (TimeoutError), or closed by the server
        pass


def flood_wave(server, bystander, sockets: int, rate: float, seconds: float) -> tuple[float, list[int], list[float]]:
    """``sockets`` raw clients send 1 MiB messages at ``rate`` for ``seconds`` and never read, while
    ``bystander`` makes round trips; the peak RSS, the messages each client sent, the round trips.
    The clients have been closed and everything held for them given back when it returns."""
    hostile = [RawClient(server.port, "/api/chat/ws/flood", rcvbuf=4096) for _ in range(sockets)]
    data = megabyte_message()
    sent = [0] * sockets
    until = time.monotonic() + seconds
    senders = [threading.Thread(target=send_at, args=(client, data, rate, until, sent, i), daemon=True)
               for i, client in enumerate(hostile)]
    for sender in senders:
        sender.start()
    peak, round_trips = 0.0, []
    while time.monotonic() < until:
        started = time.monotonic()
        bystander.send(json.dumps({"ping": len(round_trips)}))
        assert json.loads(bystander.recv(timeout=5)) == {"echo": {"ping": len(round_trips)}}
        round_trips.append(time.monotonic() - started)
        peak = max(peak, rss_mib(server))
        time.sleep(max(0.0, 0.05 - (time.monotonic() - started)))  # pacing: 20 a second, under MESSAGE_RATE
    for sender in senders:
        sender.join(5)
    peak = max(peak, rss_mib(server))
    held = server_stats(server)["inbound_bytes"].get("127.0.0.1", 0)
    assert held <= sockets * (MIB + 256 * 1024), f"{held} bytes held unread for {sockets} connections"
    for client in hostile:
        client.close()
    # Gone: no byte is held for them any more and no connection remains (the queues went with them).
    stats = settled(lambda: server_stats(server),
                    lambda now: now["open_connections"] == 2 and not now["inbound_bytes"], 20, 0.2)
    assert stats["open_connections"] == 2, stats  # the bystander and the probe
    assert stats["inbound_bytes"] == {} and stats["inbound_waiting"] == 0, stats
    return peak, sent, round_trips


@pytest.mark.timeout(120)
def test_four_clients_sending_megabytes_and_never_reading_cost_bounded_memory(shipped_limits):
    """The attack of issue 26: four sockets, 1 MiB messages at 50/s to the echo view, never reading
    the echoes. Each connection may make the server hold MAX_INBOUND_BYTES (1 MiB) of unread input
    plus one read from its socket (64 KiB on daphne, 256 KiB on uvicorn); besides, the view holds the
    message it is echoing while its send waits (the text, the decoded value, the reply and its frame:
    4 MiB) and the server's write buffer one frame past SEND_BUFFER_SIZE (1 MiB). So about 6.3 MiB a
    socket, 25 MiB for four; the bound allows 16 MiB more for the allocator. On main daphne queued
    64 messages a socket: +277 MiB in 3 s. After the first wave has gone, nothing is held for it
    (the server's own count) and a second wave stays within the same bound: the first's was given back."""
    server = shipped_limits
    rate, seconds, sockets = 50, 3.0, 4
    per_socket = MIB + 256 * 1024 + 4 * MIB + 64 * 1024 + MIB
    bound = sockets * per_socket / MIB + 16
    with connect(f"{server.ws_url}/api/chat/ws/bystander", max_size=None) as bystander:
        bystander.send(json.dumps({"p": "x" * (MIB - 100)}))  # warm up: the allocator has seen a 1 MiB echo
        assert len(bystander.recv(timeout=10)) > MIB - 100
        idle = rss_mib(server)
        peak, sent, round_trips = flood_wave(server, bystander, sockets, rate, seconds)
        print(f"{type(server).__name__}: RSS idle {idle:.1f} MiB, peak {peak:.1f} (+{peak - idle:.1f}, bound "
              f"+{bound:.1f}); messages sent {sent} of {int(rate * seconds)} each; slowest round trip "
              f"{max(round_trips) * 1000:.0f} ms")
        assert peak - idle < bound, f"RSS grew {peak - idle:.1f} MiB for {sockets} clients that never read"
        # Pushed back: TCP stopped the senders long before they sent what they meant to.
        assert all(count < rate * seconds / 2 for count in sent), sent
        assert len(round_trips) > 10 and max(round_trips) < 1.0, "the well-behaved client was slowed down"
        again, sent, _ = flood_wave(server, bystander, sockets, rate, seconds)
        print(f"second wave: peak {again:.1f} MiB (+{again - idle:.1f}); after it {rss_mib(server):.1f} MiB")
        assert again - idle < bound, f"after a second wave RSS is +{again - idle:.1f} MiB: the first's was kept"
        assert all(count < rate * seconds / 2 for count in sent), sent


@pytest.mark.timeout(120)
def test_a_message_over_max_message_size_is_refused_1009_before_the_server_buffers_it(shipped_limits):
    """uvicorn's own limit (``--ws-max-size``) is 16 MiB: on main it buffered a 12 MiB message whole
    before the view could refuse it. Both servers now refuse it at its frame header."""
    server = shipped_limits
    idle = rss_mib(server)
    clients = [RawClient(server.port, "/api/chat/ws/big") for _ in range(4)]
    body = json.dumps({"p": "x" * (12 * MIB)}).encode()
    data = frame(0x1, body)
    codes = []
    for client in clients:
        client.sock.settimeout(5)
        try:
            client.send(data)
        except OSError:  # the server closed while the message was still going out
            pass
        codes.append(client.close_code())
    grown = rss_mib(server) - idle
    for client in clients:
        client.close()
    assert codes == [1009] * 4, codes
    assert grown < 16, f"RSS grew {grown:.1f} MiB for 4 messages the server refuses"


@pytest.mark.timeout(120)
def test_one_address_shares_one_inbound_budget_past_which_its_connections_are_closed_1008(shipped_limits):
    """Twenty sockets from one address (127.0.0.2) flood the echo view and never read: each may hold
    MAX_INBOUND_BYTES, but together they hold at most MAX_INBOUND_BYTES_PER_IP (16 MiB) plus one read;
    past half of it, those with messages waiting are not read, and the ones that take it past the whole
    budget are closed with 1008. A client from another address is not slowed down."""
    server = shipped_limits
    source = require_untrusted_loopback()
    # the flood lasts at least `seconds`, and on a loaded machine up to `longest`, until one is closed
    sockets, seconds, longest, budget = 20, 3.0, 12.0, 16 * MIB
    closed_before = server_stats(server)["server_closed"].get("1008", 0)
    hostile = [RawClient(server.port, "/api/chat/ws/flood", rcvbuf=4096, source=source) for _ in range(sockets)]
    data = megabyte_message()
    sent = [0] * sockets
    began = time.monotonic()
    until, stop = began + longest, threading.Event()
    senders = [threading.Thread(target=send_at, args=(client, data, 50, until, sent, i, stop), daemon=True)
               for i, client in enumerate(hostile)]
    for sender in senders:
        sender.start()
    most, slowest, closed, stopped = 0, 0.0, 0, until
    with connect(f"{server.ws_url}/api/chat/ws/bystander") as bystander:
        while time.monotonic() < until and not (stop.is_set() and time.monotonic() > stopped + 1):
            started = time.monotonic()
            bystander.send('{"ping": 1}')
            assert json.loads(bystander.recv(timeout=5)) == {"echo": {"ping": 1}}
            slowest = max(slowest, time.monotonic() - started)
            now = server_stats(server)
            most = max(most, now["inbound_bytes"].get(source, 0))
            closed = now["server_closed"].get("1008", 0) - closed_before
            if not stop.is_set() and closed and time.monotonic() >= began + seconds:
                stop.set()
                stopped = time.monotonic()
    flooded = stopped - began
    stop.set()
    for sender in senders:
        sender.join(5)
    for client in hostile:
        client.close()
    stats = settled(lambda: server_stats(server), lambda now: not now["inbound_bytes"], 20, 0.2)
    closed = stats["server_closed"].get("1008", 0) - closed_before
    print(f"{type(server).__name__}: most held for {source}: {most / MIB:.1f} MiB (budget 16); {closed} of "
          f"{sockets} closed 1008 in {flooded:.1f} s of flood; sent {sorted(sent)}; "
          f"slowest round trip {slowest * 1000:.0f} ms")
    assert most <= budget + 256 * 1024, f"{most} bytes held for one address"
    assert closed >= 1, f"no connection past the address's budget was closed in {longest} s"
    assert all(count < 50 * flooded / 2 for count in sent), sent
    assert slowest < 1.0
    assert stats["inbound_bytes"] == {} and stats["inbound_waiting"] == 0


@pytest.mark.timeout(60)
def test_a_push_only_view_that_never_reads_holds_its_inbox_within_max_inbound_bytes(shipped_limits):
    """The specification's push-only ``_handle`` never reads: its reader task fills the view's inbox,
    which counts with the server's queue, so the socket stops being read at MAX_INBOUND_BYTES."""
    server = shipped_limits
    client = RawClient(server.port, "/api/t/trading/ticks/R_100", rcvbuf=4096)
    data = frame(0x1, json.dumps({"p": "x" * (200 * 1024)}).encode())
    sent = [0]
    send_at(client, data, 50, time.monotonic() + 2.0, sent, 0)
    held = server_stats(server)["inbound_bytes"].get("127.0.0.1", 0)
    print(f"{type(server).__name__}: {sent[0]} messages of 200 KiB sent in 2 s; {held} bytes held unread")
    assert sent[0] < 60, "the push-only view's client was read without bound: it sent most of its 100 messages"
    assert 0 < held <= MIB + 256 * 1024 + 200 * 1024, held
    client.close()
    stats = settled(lambda: server_stats(server), lambda now: not now["inbound_bytes"], 20, 0.2)
    assert stats["inbound_bytes"] == {}
