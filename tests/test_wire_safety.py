"""One client must never hurt another: backpressure, strict encoding, close frames, departures.

Against a real daphne and a real uvicorn (tests.wire_settings: slow-consumer timeout 2 s, 64 KiB messages), with real
clients over sockets; the hostile ones speak raw frames (tests.raw_ws). The relay cases of the backpressure
tests run again with ``REALTIME["DIRECT_WRITES"]`` off (the ``-asgi`` servers of the ``wire`` fixture): the
other tests do not touch direct writes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest
import websockets

from tests.raw_ws import RawClient, close_frame, frame
from tests.servers import Uvicorn
from tests.waiting import asettled, quiet_wire, settled, wire_subscribers
from tests.wire import never_reading_sse, report, rss_mib

#: A relay case: it runs on the wire servers without direct writes too.
ALSO_ASGI = pytest.mark.also_without_direct_writes


def closed_with(server, view: str) -> list[int]:
    """From synchronous tests: the close codes the server's ``view`` has seen."""
    return asyncio.run(report(server))["closed"].get(view, [])


# -- backpressure ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["fanout", pytest.param("relay", marks=ALSO_ASGI), pytest.param("forwarded", marks=ALSO_ASGI)],
    ids=["stream", "relay", "forwarded"],
)
async def test_a_subscriber_that_never_reads_costs_bounded_memory_and_others_get_everything(wire, path):
    view = {"fanout": "Fanout", "relay": "Relay", "forwarded": "Forwarded"}[path]
    before = await quiet_wire(wire)
    rss_before = rss_mib(wire)
    slow_ws = RawClient(wire.port, f"/api/w/{path}", rcvbuf=4096)
    slow_sse = never_reading_sse(wire.port)
    readers = [await websockets.connect(f"{wire.ws_url}/api/w/{path}", max_size=None) for _ in range(3)]
    await wire_subscribers(wire, before["subscribers"] + 5)
    assert (await report(wire))["subscribers"] == before["subscribers"] + 5

    received: list[list[int]] = [[] for _ in readers]

    async def read(index, ws):
        while len(received[index]) < 1000:
            message = json.loads(await ws.recv())
            assert "gap" not in message, "a reading subscriber must not miss anything"
            received[index].append(message["n"])

    peak = rss_mib(wire)
    async with websockets.connect(f"{wire.ws_url}/api/w/publish") as publisher:
        readers_done = asyncio.gather(*(read(i, ws) for i, ws in enumerate(readers)))
        await publisher.send(json.dumps({"count": 1000, "size": 10240}))
        while not readers_done.done():
            peak = max(peak, rss_mib(wire))
            await asyncio.wait({readers_done}, timeout=0.05)  # an RSS sample every 50 ms until they are done
        await readers_done
        assert json.loads(await publisher.recv()) == {"published": 1000}
    for numbers in received:
        assert numbers == list(range(1000))
    # 2 x 10 MB were owed to the slow pair; they hold at most their queues (500 shared messages).
    assert peak - rss_before < 20, f"RSS grew {peak - rss_before:.1f} MiB for two clients that never read"

    await asettled(lambda: report(wire), lambda now: now["subscribers"] <= before["subscribers"] + 3, 15, 0.2)
    assert (await report(wire))["subscribers"] == before["subscribers"] + 3, "slow subscribers were not ended"
    await asettled(lambda: report(wire), lambda now: 4008 in now["closed"].get(view, []), 15, 0.2)
    assert 4008 in (await report(wire))["closed"].get(view, []), await report(wire)
    slow_ws.close()
    slow_sse.close()
    for ws in readers:
        await ws.close()
    await quiet_wire(wire)  # every client of this test has gone
    after = rss_mib(wire)
    print(f"RSS MiB: before {rss_before:.1f}, peak {peak:.1f}, after {after:.1f}")
    assert after - rss_before < 15, f"{after - rss_before:.1f} MiB still held after the slow clients left"


@pytest.mark.parametrize(
    "path",
    ["fanout-events", pytest.param("relay-events", marks=ALSO_ASGI), pytest.param("forwarded-events", marks=ALSO_ASGI)],
    ids=["follow", "relay", "forwarded"],
)
async def test_a_slow_sse_follower_is_dropped_with_event_error_slow_consumer(wire, path):
    before = (await quiet_wire(wire))["subscribers"]
    sock = never_reading_sse(wire.port, path)
    await wire_subscribers(wire, before + 1)
    async with websockets.connect(f"{wire.ws_url}/api/w/publish") as publisher:
        await publisher.send(json.dumps({"count": 600, "size": 10240, "pause": 0}))
        await publisher.recv()
    # The 2 s timeout passes; the last frame is queued and the connection dropped 1 s later. A
    # client that reads again in between finds the frame at the end of what it was owed.
    # Given up on: the follower's stream has ended (Django's response closer closes its body); read now.
    await wire_subscribers(wire, before, timeout=40)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # and read fast: MBs are owed
    sock.settimeout(5)
    body = b""
    ended = False
    try:
        while chunk := sock.recv(1 << 20):
            body += chunk
        ended = True
    except ConnectionResetError:
        ended = True
    except TimeoutError:
        pass
    sock.close()
    assert ended, "the server kept the slow follower's connection"
    assert len(body) < 3_000_000, "the server buffered what the follower was owed"
    if isinstance(wire, Uvicorn):
        return  # uvicorn waits for room before each write: the last frame goes only to a reader
    assert b'event: error\ndata: {"code":"slow_consumer"' in body[-400:], body[-400:]
    assert body.endswith(b"\r\n0\r\n\r\n"), "the response did not end"


async def test_a_client_that_floods_a_slow_view_is_not_read_without_bound(wire):
    rss_before = rss_mib(wire)
    client = RawClient(wire.port, "/api/w/slow")
    client.sock.settimeout(0.5)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    message = frame(0x1, json.dumps({"p": "y" * 10000}).encode())
    sent = 0
    deadline = time.monotonic() + 6
    try:
        while time.monotonic() < deadline and sent < 3000:
            client.send(message)
            sent += 1
    except (TimeoutError, OSError):
        pass
    growth = rss_mib(wire) - rss_before
    client.close()
    assert sent < 3000, "the server read 30 MB from a client its view could not keep up with"
    assert growth < 20


# -- publishing cannot poison subscribers --------------------------------------------------------


@pytest.mark.parametrize("poison", ["surrogate", "nan", "inf", "object"])
async def test_a_message_that_is_not_strict_json_reaches_no_subscriber_and_no_history(wire, poison):
    before = (await quiet_wire(wire))["subscribers"]
    async with websockets.connect(f"{wire.ws_url}/api/w/fanout") as reader, \
            websockets.connect(f"{wire.ws_url}/api/w/publish") as publisher:
        await wire_subscribers(wire, before + 1)
        await publisher.send(json.dumps({"poison": poison}))
        reply = json.loads(await publisher.recv())
        assert reply["error"] == "UnencodableMessage"
        await publisher.send(json.dumps({"count": 1, "size": 1}))
        assert json.loads(await reader.recv()) == {"n": 0, "p": "x"}  # the good one, nothing before it
        await publisher.recv()
    async with httpx.AsyncClient(timeout=5) as http:
        async with http.stream("GET", f"{wire.url}/api/w/fanout-events", headers={"Last-Event-ID": "0"}) as stream:
            seen = b""
            async for chunk in stream.aiter_bytes():
                seen += chunk
                if seen.count(b"\n\n") >= 4:
                    break
    assert b"bad" not in seen and b"Infinity" not in seen and b"NaN" not in seen


@pytest.mark.parametrize("text", ['{"a": "\\ud800"}', '{"n": 1e999}', '{"n": NaN}', "[-Infinity]"])
async def test_inbound_json_that_is_not_strict_closes_1007_and_spares_the_others(wire, text):
    async with websockets.connect(f"{wire.ws_url}/api/w/echo") as bystander, \
            websockets.connect(f"{wire.ws_url}/api/w/echo") as sender:
        await sender.send(text)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await sender.recv()
        assert closed.value.rcvd.code == 1007
        await bystander.send('{"still": "here"}')
        assert json.loads(await bystander.recv()) == {"echo": {"still": "here"}}


# -- every protocol error gets its close frame ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "frames", "code"),
    [
        ("whole message over the limit", [frame(0x1, b'"' + b"a" * 70000 + b'"')], 1009),
        ("fragments over the limit", [frame(0x1, b"a" * 40000, fin=False), frame(0x0, b"a" * 40000)], 1009),
        ("invalid UTF-8", [frame(0x1, b'"\xff\xfe"')], 1007),
        ("unmasked frame", [frame(0x1, b'"hi"', masked=False)], 1002),
        ("reserved close code", [close_frame(1005)], 1002),
        ("close code out of range", [close_frame(999)], 1002),
        ("unknown opcode", [frame(0x3, b"x")], 1002),
    ],
)
def test_protocol_errors_get_a_close_frame_with_their_code(wire, name, frames, code):
    client = RawClient(wire.port, "/api/w/echo")
    try:
        for data in frames:
            client.send(data)
        assert client.close_code() == code, name
    finally:
        client.close()


def test_a_message_then_close_in_one_write_is_a_clean_1000_every_time(wire):
    before = len(closed_with(wire, "Echo"))
    log_before = len(wire.log())
    for _ in range(100):
        client = RawClient(wire.port, "/api/w/echo")
        client.send(frame(0x1, b'{"bye": true}') + close_frame(1000))
        client.close_code()
        client.close()
    settled(lambda: closed_with(wire, "Echo"), lambda codes: len(codes) >= before + 100, 10, 0.2)
    codes = closed_with(wire, "Echo")[before:]
    assert codes == [1000] * 100
    log = wire.log()[log_before:]
    assert "ERROR" not in log and "Traceback" not in log


# -- empty messages --------------------------------------------------------------------------------


async def test_empty_text_and_binary_messages_arrive(wire):
    async with websockets.connect(f"{wire.ws_url}/api/w/empty") as ws:
        assert await ws.recv() == ""
        assert await ws.recv() == b""
        assert await ws.recv() == "done"


async def test_a_bytes_view_heartbeats_with_an_empty_binary_frame(wire):
    async with websockets.connect(f"{wire.ws_url}/api/w/bytes-beat") as ws:
        assert await asyncio.wait_for(ws.recv(), 5) == b""
