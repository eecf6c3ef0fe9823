"""The soak server: ``realtime`` on daphne, pushing one Channel to WebSockets and SSE streams.

- ``/ws``: a WebSocketView whose ``stream()`` yields everything published on ``Channel("soak")``.
- ``/sse``: an SSEView doing the same, one ``data:`` event per message.
- ``/publish?count=M&rate=R``: returns at once and starts an in-server task that publishes M
  messages ``{"seq": i, "ts": time.time()}`` at R msg/s (R=0: flat out, yielding once per message).
- ``/stats``: JSON counters and the process's memory (``bench/soak/probes.py`` has the query flags:
  ``?gc=1``, ``?trim=1`` for glibc's ``malloc_trim(0)``, and the ``--diagnose`` ones).

    daphne -b 127.0.0.1 -p PORT bench.soak.app:application
"""

import asyncio
import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.soak.settings")

from django.core.asgi import get_asgi_application

django_http = get_asgi_application()  # django.setup() before realtime imports anything

from django.http import JsonResponse  # noqa: E402
from django.urls import include, path  # noqa: E402

from bench.soak.probes import process_stats  # noqa: E402
from realtime import Channel, CoreApp, Router, SSEView, WebSocketView  # noqa: E402

CHANNEL = Channel("soak")
COUNTS = {"ws": 0, "sse": 0}
PUBLISHER = {"published": 0, "delivered": 0, "target": 0, "running": False, "started": None, "finished": None}
TASKS: set = set()  # strong references to publisher tasks (asyncio keeps weak ones)


class SoakWS(WebSocketView):
    keepalive = 15

    async def on_connect(self, ws, **params):
        COUNTS["ws"] += 1

    async def on_disconnect(self, ws, code):
        COUNTS["ws"] -= 1

    async def stream(self, ws, **params):
        async for message in CHANNEL.subscribe():
            yield message


class SoakSSE(SSEView):
    ping_interval = 15  # the SSE view's keepalive (": ping" comments)

    async def stream(self, request, **params):
        COUNTS["sse"] += 1
        try:
            async for message in CHANNEL.subscribe():
                yield {"data": message}
        finally:
            COUNTS["sse"] -= 1


async def _publish(count: int, rate: float) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    PUBLISHER.update(target=PUBLISHER["target"] + count, running=True, started=time.time())
    try:
        for seq in range(count):
            if rate > 0:
                delay = start + seq / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            PUBLISHER["delivered"] += await CHANNEL.publish({"seq": seq, "ts": time.time()})
            PUBLISHER["published"] += 1
            if rate <= 0:
                await asyncio.sleep(0)
    finally:
        PUBLISHER.update(running=False, finished=time.time())


async def publish(request):
    count = int(request.GET.get("count", "1"))
    rate = float(request.GET.get("rate", "0"))
    task = asyncio.ensure_future(_publish(count, rate))
    TASKS.add(task)
    task.add_done_callback(TASKS.discard)
    return JsonResponse({"ok": True, "count": count, "rate": rate})


async def stats(request):
    sinks = list(CHANNEL._subscribers)  # bench-only peek: drop-oldest counters of live subscribers
    return JsonResponse(
        {
            **process_stats(request.GET),
            "ws_subscribers": COUNTS["ws"],
            "sse_streams": COUNTS["sse"],
            "channel_subscribers": CHANNEL.subscriber_count,
            "dropped_live": sum(getattr(s, "dropped", 0) for s in sinks),
            "queued_live": sum(s.queue.qsize() for s in sinks if hasattr(s, "queue")),
            "publisher": PUBLISHER,
        }
    )


router = Router()
router.register_websocket("/ws", SoakWS)
router.register_sse("/sse", SoakSSE)

urlpatterns = [path("publish", publish), path("stats", stats), path("", include(router.urls))]

application = CoreApp(routers=[router], http_app=django_http)
