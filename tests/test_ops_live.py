"""Operations against a real daphne: Prometheus metrics scraped over HTTP, and one log line per connection.

The server runs tests.ops_settings (the wire-safety limits: slow-consumer timeout 2 s) with the
plain metrics endpoint on a free port and the ``realtime.connections`` logger in JSON.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Live
from tests.liveapp.management.commands.seed_test_users import PASSWORD
from tests.raw_ws import RawClient
from tests.servers import Daphne, free_port, prepare_database
from tests.waiting import quiet_wire, wait_until, wire_subscribers

pytestmark = pytest.mark.timeout(180)

FANOUT = "/api/w/fanout"


@pytest.fixture(scope="module")
def ops(tmp_path_factory, output_dir):
    metrics_port = free_port()
    env, users = prepare_database(tmp_path_factory.mktemp("ops"), {
        "DJANGO_SETTINGS_MODULE": "tests.ops_settings", "REALTIME_METRICS_PORT": str(metrics_port),
    })
    server = Daphne(env, output_dir / "daphne-ops.log").start()
    server.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    server.users = users
    yield server
    server.stop()


def scrape(server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the plain metrics endpoint, by (name, sorted labels)."""
    text = httpx.get(server.metrics_url, timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def connection_ends(server) -> list[dict]:
    """The JSON lines of logger realtime.connections in the server's log."""
    return [json.loads(line) for line in server.log().splitlines()
            if line.startswith("{") and '"realtime.connections"' in line]


def wait_for(predicate, timeout: float = 15.0):
    return wait_until(predicate, timeout, 0.2)


async def publish(server, count: int, size: int = 10, pause: float = 0.002) -> None:
    async with websockets.connect(f"{server.ws_url}/api/w/publish") as publisher:
        await publisher.send(json.dumps({"count": count, "size": size, "pause": pause}))
        await asyncio.wait_for(publisher.recv(), 60)


async def test_metrics_follow_connections_publishes_drops_and_closes(ops):
    endpoint = {"endpoint": FANOUT, "protocol": "websocket"}
    subscribers = (await quiet_wire(ops))["subscribers"]
    ended = len(ends_at(ops, FANOUT, 0))
    before = scrape(ops)
    reader = await websockets.connect(f"{ops.ws_url}{FANOUT}")
    await wire_subscribers(ops, subscribers + 1)
    opened = scrape(ops)
    assert value(opened, "realtime_connections_open", **endpoint) == value(before, "realtime_connections_open",
                                                                            **endpoint) + 1
    assert value(opened, "realtime_channel_subscribers", channel="wire-fanout") >= 1

    await publish(ops, 5)
    for _ in range(5):
        await asyncio.wait_for(reader.recv(), 10)
    published = scrape(ops)
    grew = {name: value(published, name, channel="wire-fanout") - value(before, name, channel="wire-fanout")
            for name in ("realtime_channel_publishes_total", "realtime_channel_deliveries_total")}
    assert grew == {"realtime_channel_publishes_total": 5, "realtime_channel_deliveries_total": 5}
    assert value(published, "realtime_messages_sent_total", **endpoint) - value(
        before, "realtime_messages_sent_total", **endpoint) == 5
    assert value(published, "realtime_publish_to_send_seconds_count") > value(
        before, "realtime_publish_to_send_seconds_count")

    await reader.close()
    wait_for(lambda: ends_at(ops, FANOUT, ended))  # its log line: written once its figures are counted
    closed = scrape(ops)
    assert value(closed, "realtime_connections_open", **endpoint) == value(before, "realtime_connections_open",
                                                                            **endpoint)
    assert value(closed, "realtime_connection_duration_seconds_count", **endpoint) == value(
        before, "realtime_connection_duration_seconds_count", **endpoint) + 1
    assert value(closed, "realtime_connections_closed_total", protocol="websocket", code="1000",
                 closed_by="client") >= 1

    # A subscriber that never reads: its queue drops, then it is closed as a slow consumer.
    slow = RawClient(ops.port, FANOUT, rcvbuf=4096)
    await wire_subscribers(ops, subscribers + 1)
    await publish(ops, 800, size=10240, pause=0)

    def slow_closed():
        samples = scrape(ops)
        if value(samples, "realtime_slow_consumer_closes_total", protocol="websocket") > value(
                before, "realtime_slow_consumer_closes_total", protocol="websocket"):
            return samples
        return None

    dropped = wait_for(slow_closed)
    slow.close()
    assert value(dropped, "realtime_channel_dropped_total", channel="wire-fanout") > value(
        before, "realtime_channel_dropped_total", channel="wire-fanout")
    assert value(dropped, "realtime_connection_dropped_messages_total", **endpoint) > value(
        before, "realtime_connection_dropped_messages_total", **endpoint)
    assert value(dropped, "realtime_connections_closed_total", protocol="websocket", code="4008",
                 closed_by="server") >= 1
    assert value(dropped, "realtime_connections_open", **endpoint) == value(before, "realtime_connections_open",
                                                                             **endpoint)


async def test_a_burst_of_10000_channel_names_folds_into_a_bounded_label_set(ops):
    async with websockets.connect(f"{ops.ws_url}/api/ops/burst", max_size=None) as burst:
        await burst.send(json.dumps({"n": 10000, "prefix": "burst:"}))
        assert json.loads(await asyncio.wait_for(burst.recv(), 60)) == {"published": 10000}
        await burst.send(json.dumps({"n": 300, "prefix": "plain"}))  # no "prefix:" part: "other"
        await asyncio.wait_for(burst.recv(), 60)
    samples = scrape(ops)
    labels = {dict(key[1])["channel"] for key in samples if key[0] == "realtime_channel_publishes_total"}
    assert len(labels) <= 20 + 2, sorted(labels)  # METRICS_MAX_CHANNELS of their own, then the patterns
    assert "burst:*" in labels and "other" in labels
    folded = value(samples, "realtime_channel_publishes_total", channel="burst:*") + sum(
        value(samples, "realtime_channel_publishes_total", channel=label) for label in labels if
        label.startswith("burst:") and label != "burst:*")
    assert folded == 10000  # nothing lost in the folding


def test_the_metrics_url_is_for_staff_only(ops):
    live = Live(ops, ops.users)
    url = f"{ops.url}/admin/realtime/metrics"
    assert httpx.get(url).status_code == 401
    plain = httpx.get(url, headers={"Authorization": f"Bearer {live.token('plain')}"})
    assert plain.status_code == 403 and "Administrator" in plain.text
    staff = httpx.get(url, headers={"Authorization": f"Bearer {live.token('staff')}"})
    assert staff.status_code == 200 and "realtime_connections_open" in staff.text
    with httpx.Client(base_url=ops.url) as session:  # the admin's session works too
        session.get("/admin/login/")
        session.post("/admin/login/", data={"username": "staff", "password": PASSWORD,
                                            "csrfmiddlewaretoken": session.cookies["csrftoken"], "next": "/admin/"})
        assert session.get("/admin/realtime/metrics").status_code == 200
        assert session.get("/admin/realtime/").status_code == 200


# -- the log line -----------------------------------------------------------------------------------


def ends_at(server, endpoint: str, seen: int) -> list[dict]:
    return [line for line in connection_ends(server) if line["endpoint"] == endpoint][seen:]


async def test_the_log_line_of_a_client_close(ops):
    endpoint = "/api/w/echo"
    seen = len(ends_at(ops, endpoint, 0))
    token = Live(ops, ops.users).token("plain")
    async with websockets.connect(f"{ops.ws_url}/api/w/echo?token={token}") as ws:
        await ws.send('{"hi": 1}')
        await ws.recv()
    [line] = wait_for(lambda: ends_at(ops, endpoint, seen))
    assert line["code"] == "1000" and line["closed_by"] == "client"
    assert line["user"] == ops.users["plain"] and line["protocol"] == "websocket"
    assert line["messages_in"] == 1 and line["messages_out"] == 1 and line["dropped"] == 0
    assert line["duration"] > 0
    assert token not in ops.log()  # the user's id, never the token


async def test_the_log_line_of_a_server_close(ops):
    endpoint = "/api/ops/close/<int:code>"
    seen = len(ends_at(ops, endpoint, 0))
    async with websockets.connect(f"{ops.ws_url}/api/ops/close/4321") as ws:
        await ws.send("{}")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd.code == 4321
    [line] = wait_for(lambda: ends_at(ops, endpoint, seen))
    assert (line["code"], line["closed_by"], line["messages_in"]) == ("4321", "server", 1)


async def test_the_log_line_of_a_slow_consumer_close(ops):
    seen = len(ends_at(ops, FANOUT, 0))
    subscribers = (await quiet_wire(ops))["subscribers"]
    slow = RawClient(ops.port, FANOUT, rcvbuf=4096)
    await wire_subscribers(ops, subscribers + 1)
    await publish(ops, 800, size=10240, pause=0)
    lines = wait_for(lambda: [line for line in ends_at(ops, FANOUT, seen) if line["code"] == "4008"])
    slow.close()
    assert lines[0]["closed_by"] == "server"
    assert lines[0]["dropped"] > 0 and lines[0]["messages_out"] > 0


async def test_refused_handshakes_and_sse_requests_are_counted_by_code_and_status(ops):
    before = scrape(ops)
    async with websockets.connect(f"{ops.ws_url}/api/t/admin-only") as ws:  # no token: 4003
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd.code == 4003
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{ops.url}/api/t/sse/notifications")).status_code == 401
    after = scrape(ops)
    for protocol, code in (("websocket", "4003"), ("sse", "401")):
        assert value(after, "realtime_handshakes_refused_total", protocol=protocol, code=code) == value(
            before, "realtime_handshakes_refused_total", protocol=protocol, code=code) + 1
    # A refusal is not a connection: nothing was opened or logged for /api/t/admin-only.
    assert value(after, "realtime_connections_total", endpoint="/api/t/admin-only", protocol="websocket") == 0
    assert not [line for line in connection_ends(ops) if line["endpoint"] == "/api/t/admin-only"]


async def test_the_log_line_of_an_sse_stream_the_client_left(ops):
    endpoint = "/api/w/fanout-events"
    seen = len(ends_at(ops, endpoint, 0))
    subscribers = (await quiet_wire(ops))["subscribers"]
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream("GET", f"{ops.url}{endpoint}") as stream:
            await wire_subscribers(ops, subscribers + 1)  # the stream subscribes once its headers are out
            await publish(ops, 3)
            body = b""
            async for chunk in stream.aiter_bytes():
                body += chunk
                if body.count(b"event: m") >= 3:
                    break
    [line] = wait_for(lambda: ends_at(ops, endpoint, seen))
    assert (line["protocol"], line["code"], line["closed_by"]) == ("sse", "disconnect", "client")
    assert line["messages_out"] >= 3 and line["dropped"] == 0
