"""Plain Django async view returning ``StreamingHttpResponse`` over an async generator (SSE).

Fed by an in-process broadcast: one ``asyncio.Queue`` per subscriber.

    daphne -b 127.0.0.1 -p PORT bench.peers.django_streaming:application
"""

import asyncio
import os

from django.core.asgi import get_asgi_application
from django.http import JsonResponse, StreamingHttpResponse
from django.urls import path

from bench.peers._common import encode, publish_loop, publish_params, spawn

# Settings are read lazily: get_asgi_application() below runs django.setup().
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.peers.django_settings"
os.environ["BENCH_URLCONF"] = "bench.peers.django_streaming"

QUEUES: set = set()


async def _publish_one(message: dict) -> None:
    data = f"data: {encode(message)}\n\n"
    for queue in list(QUEUES):
        queue.put_nowait(data)


async def sse(request):
    queue: asyncio.Queue = asyncio.Queue()

    async def events():
        QUEUES.add(queue)
        try:
            yield ": connected\n\n"
            while True:
                yield await queue.get()
        finally:
            QUEUES.discard(queue)

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    return response


async def publish(request):
    spawn(publish_loop(*publish_params(request.META.get("QUERY_STRING", "")), _publish_one))
    return JsonResponse({"ok": True})


async def stats(request):
    return JsonResponse({"subscribers": len(QUEUES)})


urlpatterns = [path("sse", sse), path("publish", publish), path("stats", stats)]

application = get_asgi_application()
