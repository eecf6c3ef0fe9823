"""sse-starlette on uvicorn, fed by an in-process broadcast (one asyncio.Queue per subscriber).

    uvicorn --host 127.0.0.1 --port PORT bench.peers.sse_starlette_peer:app
"""

import asyncio

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.peers._common import encode, publish_loop, publish_params, spawn

QUEUES: set = set()


async def _publish_one(message: dict) -> None:
    data = encode(message)
    for queue in list(QUEUES):
        queue.put_nowait(data)


async def sse(request):
    queue: asyncio.Queue = asyncio.Queue()

    async def events():
        QUEUES.add(queue)
        try:
            while True:
                yield {"data": await queue.get()}
        finally:
            QUEUES.discard(queue)

    return EventSourceResponse(events())


async def publish(request):
    spawn(publish_loop(*publish_params(request.url.query), _publish_one))
    return JSONResponse({"ok": True})


async def stats(request):
    return JSONResponse({"subscribers": len(QUEUES)})


app = Starlette(
    routes=[Route("/sse", sse), Route("/publish", publish), Route("/stats", stats)]
)
