"""Graceful shutdown of a real daphne and a real uvicorn: SIGTERM refuses new connections with 503 and
``Retry-After``, closes every WebSocket with 1001, ends every SSE stream with a retry hint, logs every
connection's end, and exits bounded in time."""

from __future__ import annotations

import asyncio
import base64
import collections
import os
import random
import re
import signal
import struct
import time
from dataclasses import dataclass, field

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.raw_ws import close_frame, frame
from tests.servers import Daphne, Uvicorn, prepare_database
from tests.sse_client import text_until
from tests.waiting import await_until

pytestmark = pytest.mark.timeout(180)

SERVERS = {"daphne": Daphne, "uvicorn": Uvicorn}
#: REALTIME["SHUTDOWN_RETRY_AFTER"]'s default.
RETRY_AFTER = "5"


@pytest.mark.parametrize("kind", SERVERS)
async def test_sigterm_closes_websockets_with_1001_and_exits(kind, tmp_path, output_dir):
    env, _ = prepare_database(tmp_path)
    server = SERVERS[kind](env, output_dir / f"{kind}-shutdown.log").start()
    try:
        clients = [await websockets.connect(f"{server.ws_url}/api/t/{path}") for path in
                   ("echo/a", "echo/b", "channel-ticks/X", "ticks/Y")]
        await clients[0].send("1")
        await clients[0].recv()
        http = httpx.AsyncClient(timeout=10)
        stream = await http.send(http.build_request("GET", f"{server.url}/api/t/sse/quiet"), stream=True)
        chunks = stream.aiter_text()
        assert "event: hello" in await text_until(chunks, "event: hello")
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        codes = []
        for client in clients:
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    while True:
                        await client.recv()
            codes.append(closed.value.rcvd.code if closed.value.rcvd else None)
        assert codes == [1001, 1001, 1001, 1001]  # uvicorn's own shutdown says 1012
        async with asyncio.timeout(10):
            rest = "".join([chunk async for chunk in chunks if chunk != ": ping\n\n"])
        assert rest == "retry: 1000\n: server shutting down\n\n"  # the stream ends with a retry hint
        await stream.aclose()
        await http.aclose()
        await asyncio.to_thread(server.process.wait, 15)  # uvicorn's own waits for the SSE stream forever
        assert time.monotonic() - started < 15
        # realtime.connections logs each end as the server's doing (issue 15), not the client's.
        assert server.log().count("code=1001 closed_by=server") == 4, server.log()
    finally:
        server.stop(signal.SIGKILL)


# -- the shutdown race: 20 clients reconnecting as fast as they can -------------------------------------


@dataclass
class Attempt:
    """One handshake of a reconnecting client, and how it ended."""

    sent: float  # when the upgrade request went out (time.monotonic)
    answered: float | None = None
    status: int | None = None  # None: no answer at all (refused, reset, closed)
    retry_after: str | None = None
    #: For an accepted socket: the server's close code (1006: the connection ended without one),
    #: or "client" when the client closed it first.
    end: int | str | None = None
    headers: dict[str, str] = field(default_factory=dict)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(2)
    size = head[1] & 0x7F
    if size == 126:
        size = struct.unpack("!H", await reader.readexactly(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", await reader.readexactly(8))[0]
    return head[0] & 0x0F, await reader.readexactly(size)


async def attempt(port: int, path: str, stop: asyncio.Event) -> Attempt:
    """One upgrade; an accepted socket echoes once, then stays until the server closes it or the
    client closes it itself after a few milliseconds (so that handshakes keep coming)."""
    tried = Attempt(time.monotonic())
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return tried
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)).decode("latin-1")
        tried.answered = time.monotonic()
        status_line, *lines = head.split("\r\n")
        tried.status = int(status_line.split()[1])
        fields = (line.partition(":") for line in lines if line)
        tried.headers = {name.lower(): value.strip() for name, _, value in fields}
        tried.retry_after = tried.headers.get("retry-after")
        if tried.status != 101:
            return tried
        writer.write(frame(0x1, b'{"n": 1}'))
        hold = asyncio.ensure_future(asyncio.sleep(random.uniform(0.005, 0.05)))
        closed_by_client = False
        try:
            while True:
                read = asyncio.ensure_future(read_frame(reader))
                if not closed_by_client and not stop.is_set():
                    await asyncio.wait({read, hold}, return_when=asyncio.FIRST_COMPLETED)
                    if not read.done() and not stop.is_set():
                        closed_by_client = True  # the client leaves, and reconnects at once
                        writer.write(close_frame(1000))
                opcode, payload = await read
                if opcode == 0x8:
                    if closed_by_client:
                        tried.end = "client"
                    else:
                        tried.end = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                        writer.write(close_frame(1000))
                    return tried
        finally:
            hold.cancel()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        if tried.status == 101 and tried.end is None:
            tried.end = 1006
        return tried
    finally:
        writer.close()


async def reconnecting(port: int, path: str, attempts: list[Attempt], stop: asyncio.Event, gone: asyncio.Event) -> None:
    while not gone.is_set():
        attempts.append(await attempt(port, path, stop))


@pytest.mark.parametrize("kind", SERVERS)
async def test_no_connection_is_accepted_after_shutdown_began_and_every_one_is_closed_with_1001_and_logged(
    kind, tmp_path, output_dir
):
    env, _ = prepare_database(tmp_path)
    server = SERVERS[kind](env, output_dir / f"{kind}-shutdown-race.log").start()
    attempts: list[Attempt] = []
    stop, gone = asyncio.Event(), asyncio.Event()
    try:
        clients = [
            asyncio.create_task(reconnecting(server.port, f"/api/t/echo/r{n}", attempts, stop, gone)) for n in range(20)
        ]
        # The clients come and go: the signal lands among handshakes in flight.
        await await_until(lambda: sum(1 for a in attempts if a.end == "client") >= 100, 30, 0.05,
                          "100 connections made and left by the clients")
        stop.set()
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(server.process.wait, 30)
        gone.set()
        async with asyncio.timeout(30):
            await asyncio.gather(*clients)
        exited = time.monotonic()
    finally:
        gone.set()
        server.stop(signal.SIGKILL)
    log = server.log()
    accepted = [a for a in attempts if a.status == 101]
    refused = [a for a in attempts if a.status == 503]
    others = [a for a in attempts if a.status not in (101, 503, None)]
    assert not others, [(a.status, a.headers) for a in others]
    # Every accepted connection ended with a close frame: the client's own, or the server's 1001.
    ends = [a.end for a in accepted]
    assert set(ends) <= {"client", 1001}, sorted(map(str, ends))
    assert ends.count(1001) >= 1  # some were open when the signal came
    # No connection was accepted after the first 503 was answered: shutdown had begun by then.
    assert refused, "no handshake was answered 503 during the shutdown"
    first_refusal = min(a.answered for a in refused)
    late = [a for a in accepted if a.sent > first_refusal]
    assert not late, f"{len(late)} handshake(s) accepted after shutdown began"
    assert {a.retry_after for a in refused} == {RETRY_AFTER}
    # No handshake went unanswered before the signal; after it only once the server stopped listening.
    assert not [a for a in attempts if a.status is None and a.sent < signalled]
    # One log line per accepted connection, with the code and side the client saw.
    lines = re.findall(r"websocket ended endpoint=/api/t/echo/<room> .* code=(\S+) closed_by=(\S+)", log)
    assert len(lines) == len(accepted), (len(lines), len(accepted))
    logged = collections.Counter(lines)
    assert logged == {("1001", "server"): ends.count(1001), ("1000", "client"): ends.count("client")}, logged
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    assert exited - signalled < 20
