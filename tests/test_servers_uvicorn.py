"""realtime.servers on a real uvicorn: which protocols get a direct writer, and what it writes."""

from __future__ import annotations

import asyncio

import httpx
import uvicorn

from realtime import servers
from realtime.servers.uvicorn import ChunkWriter
from tests.servers import free_port
from tests.waiting import asettled

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
