"""The soak server: ``realtime`` on daphne, pushing one Channel to WebSockets and SSE streams.

- ``/ws``: a WebSocketView whose ``stream()`` yields everything published on ``Channel("soak")``.
- ``/sse``: an SSEView doing the same, one ``data:`` event per message.
- ``/publish?count=M&rate=R``: returns at once and starts an in-server task that publishes M
  messages ``{"seq": i, "ts": time.time()}`` at R msg/s (R=0: flat out, yielding once per message).
- ``SOAK_RELAY=1`` (``run.py --server-env SOAK_RELAY=1``): both endpoints declare ``relay = CHANNEL``
  instead (the direct delivery path, ``realtime.relay`` and ``realtime.sse_relay``).
- ``/stats``: JSON counters and the process's memory (``bench/soak/probes.py`` has the query flags:
  ``?gc=1``, ``?trim=1`` for glibc's ``malloc_trim(0)``, and the ``--diagnose`` ones).

    daphne -b 127.0.0.1 -p PORT bench.soak.app:application
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.soak.settings")

from django.core.asgi import get_asgi_application

django_http = get_asgi_application()  # django.setup() before realtime imports anything

from django.http import JsonResponse  # noqa: E402
from django.urls import include, path  # noqa: E402

from bench.soak import publisher  # noqa: E402
from bench.soak.probes import process_stats  # noqa: E402
from realtime import Channel, CoreApp, Router, SSEView, WebSocketView  # noqa: E402

CHANNEL = Channel("soak")
COUNTS = {"ws": 0, "sse": 0}
RELAY = os.environ.get("SOAK_RELAY") == "1"


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


async def publish(request):
    count, rate = int(request.GET.get("count", "1")), float(request.GET.get("rate", "0"))
    publisher.start(count, rate, CHANNEL.publish)
    return JsonResponse({"ok": True, "count": count, "rate": rate})


async def stats(request):
    sinks = CHANNEL.subscribers  # bench-only peek: drop-oldest counters of live subscribers
    return JsonResponse(
        {
            **process_stats(request.GET),
            "ws_subscribers": COUNTS["ws"],
            # A relay stream runs no code of ours: what the channel holds beyond the WebSockets.
            "sse_streams": max(0, CHANNEL.subscriber_count - COUNTS["ws"]) if RELAY else COUNTS["sse"],
            "channel_subscribers": CHANNEL.subscriber_count,
            "dropped_live": sum(getattr(s, "dropped", 0) for s in sinks),
            "queued_live": sum(s.qsize() for s in sinks if hasattr(s, "qsize")),
            "publisher": publisher.STATE,
        }
    )


class SoakRelayWS(SoakWS):
    relay = CHANNEL


class SoakRelaySSE(SSEView):
    ping_interval = 15
    relay = CHANNEL


router = Router()
router.register_websocket("/ws", SoakRelayWS if RELAY else SoakWS)
router.register_sse("/sse", SoakRelaySSE if RELAY else SoakSSE)

urlpatterns = [path("publish", publish), path("stats", stats), path("", include(router.urls))]

application = CoreApp(routers=[router], http_app=django_http)
