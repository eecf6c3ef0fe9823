"""realtime.servers on a real uvicorn: which protocols get a direct writer, what it writes, and what uvicorn logs."""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import pytest
import uvicorn
import websockets

from realtime import servers
from realtime.servers.uvicorn import ChunkWriter
from tests.servers import Uvicorn, free_port, prepare_database
from tests.waiting import alog_line, asettled

FRAMES = [b"data: one\n\n", b"id: 2\ndata: two\n\n", b"data: " + b"x" * 70000 + b"\n\n"]


def streaming_app(found: dict):
    """Sends headers and a first chunk through ASGI, then the frames through the direct writer, if any."""

    async def app(scope, receive, send):
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b": open\n\n", "more_body": True})
        writer = found["writer"] = servers.response_writer(send)
        for frame in FRAMES:
            if writer is not None and writer.ready():
                writer.write(frame)
            else:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        found["ready_before_end"] = writer.ready() if writer is not None else None
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        found["ready_after_end"] = writer.ready() if writer is not None else None

    return app


async def serve_once(http: str) -> tuple[bytes, dict]:
    found: dict = {}
    port = free_port()
    config = uvicorn.Config(streaming_app(found), host="127.0.0.1", port=port, http=http, lifespan="off",
                            log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await asettled(lambda: server.started, bool, 5, 0.05)
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"http://127.0.0.1:{port}/")
        return response.content, found
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def test_httptools_streaming_responses_get_a_chunk_writer_that_frames_like_uvicorn():
    body, found = await serve_once("httptools")
    assert isinstance(found["writer"], ChunkWriter)
    assert body == b": open\n\n" + b"".join(FRAMES)  # httpx decoded our chunks like uvicorn's own
    assert found["ready_before_end"] is True and found["ready_after_end"] is False


async def test_h11_gets_no_writer_and_the_response_goes_through_asgi():
    body, found = await serve_once("h11")
    assert found["writer"] is None
    assert body == b": open\n\n" + b"".join(FRAMES)


async def test_on_uvicorn_an_unknown_path_is_refused_404_and_topic_socket_ends_are_logged_as_seen(tmp_path, output_dir):
    """The issue's uvicorn words: no ``ASGI callable returned without completing handshake.`` for an
    unknown path, and a TopicSocket's end logged with the code and side the client saw."""
    env, _ = prepare_database(tmp_path)
    server = Uvicorn(env, output_dir / "uvicorn-words.log").start()
    try:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(f"{server.ws_url}/api/nowhere"):
                pass
        assert refused.value.response.status_code == 404
        await alog_line(server.log, '"WebSocket /api/nowhere" 404')
        for _ in range(3):  # the client closes with 1000
            async with websockets.connect(f"{server.ws_url}/api/t14/ws", subprotocols=["realtime.v1"]) as ws:
                await ws.send(json.dumps({"op": "subscribe", "ref": "1", "channel": "open:words"}))
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["ok"] is True
            assert ws.close_code == 1000
        await asettled(lambda: server.log().count("websocket ended endpoint=/api/t14/ws"), lambda n: n == 3, 10, 0.05)
    finally:
        server.stop(signal.SIGTERM)
    log = server.log()
    assert "without completing handshake" not in log and "ERROR" not in log, log
    assert log.count("endpoint=/api/t14/ws") == log.count("code=1000 closed_by=client") == 3, log
