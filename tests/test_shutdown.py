"""Graceful shutdown of a real daphne: SIGTERM closes every WebSocket with 1001, bounded in time."""

import asyncio
import signal
import time

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.servers import Daphne, prepare_database
from tests.sse_client import text_until

pytestmark = pytest.mark.timeout(120)


async def test_sigterm_closes_websockets_with_1001_and_exits(tmp_path, output_dir):
    env, _ = prepare_database(tmp_path)
    server = Daphne(env, output_dir / "daphne-shutdown.log").start()
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
        assert codes == [1001, 1001, 1001, 1001]
        async with asyncio.timeout(10):
            rest = "".join([chunk async for chunk in chunks if chunk != ": ping\n\n"])
        assert rest == "retry: 1000\n: server shutting down\n\n"  # the stream ends with a retry hint
        await stream.aclose()
        await http.aclose()
        await asyncio.to_thread(server.process.wait, 15)
        assert time.monotonic() - started < 15
        # realtime.connections logs each end as the server's doing (issue 15), not the client's.
        assert server.log().count("code=1001 closed_by=server") == 4, server.log()
    finally:
        server.stop(signal.SIGKILL)
