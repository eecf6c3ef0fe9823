"""The project's own server under test: ``realtime`` as an application would use it.

``CoreApp(routers=[...])`` with a ``WebSocketView`` at ``/ws`` and an ``SSEView`` at ``/sse``,
both iterating ``CHANNEL.subscribe()``; ``/publish`` and ``/stats`` are plain Django async views
publishing through ``Channel.publish``. Default class attributes (keepalive 30 s) except
``ping_interval`` (1 s, see FanoutSSE), as a user would write it.

    daphne -b 127.0.0.1 -p PORT bench.peers.realtime_app:application
    uvicorn --host 127.0.0.1 --port PORT bench.peers.realtime_app:application
    REDIS_URL=redis://127.0.0.1:6379/0 daphne ...   # several processes through Redis
    BENCH_RELAY=1 daphne ...                         # /ws as ``relay = CHANNEL`` (the direct path)
    BENCH_AS_WRITTEN=1 daphne ...                    # /ws as a stream() the engine cannot prove forwards
"""

import os

os.environ["DJANGO_SETTINGS_MODULE"] = "bench.peers.realtime_settings"

from django.core.asgi import get_asgi_application

django_http = get_asgi_application()  # django.setup() before realtime imports anything

from django.http import JsonResponse  # noqa: E402
from django.urls import include, path  # noqa: E402

from bench.peers._common import publish_loop, publish_params, spawn  # noqa: E402
from realtime import Channel, CoreApp, Router, SSEView, Topic, TopicSocket, WebSocketView  # noqa: E402
from realtime.pubsub.channel import registry  # noqa: E402

CHANNEL = Channel("bench")


class FanoutWS(WebSocketView):
    async def stream(self, ws, **params):
        async for message in CHANNEL.subscribe():
            yield message


class FanoutAsWritten(WebSocketView):
    """FanoutWS with an argument to ``subscribe()``: not a proven forward (realtime.forwarding), so the
    generator runs as written (``BENCH_AS_WRITTEN=1``, to profile that path)."""

    async def stream(self, ws, **params):
        async for message in CHANNEL.subscribe(maxlen=CHANNEL.maxlen):
            yield message


class FanoutRelay(WebSocketView):
    """The declarative form, served by the direct delivery path (``BENCH_RELAY=1``)."""

    relay = CHANNEL


class FanoutSSE(SSEView):
    # daphne (Twisted) sends the response headers with the first body bytes, so a stream's
    # headers leave at its first event or ping: at the default 15 s, 1,000 clients connecting
    # 100 at a time wait minutes before any message is published. 1 s bounds that wait.
    ping_interval = 1

    async def stream(self, request, **params):
        async for message in CHANNEL.subscribe():
            yield {"data": message}


class FanoutSSERelay(SSEView):
    """The declarative form, served by the direct delivery path (``BENCH_RELAY=1``)."""

    ping_interval = 1
    relay = CHANNEL


async def publish(request):
    spawn(publish_loop(*publish_params(request.META.get("QUERY_STRING", "")), CHANNEL.publish))
    return JsonResponse({"ok": True})


async def stats(request):
    """Subscribers of ``/ws`` (``bench``), or with ``?topics=K`` of ``bench:0`` .. ``bench:K-1`` together."""
    topics = int(request.GET.get("topics", "0"))
    if not topics:
        return JsonResponse({"subscribers": CHANNEL.subscriber_count})
    channels = (registry.get(f"bench:{i}") for i in range(topics))
    return JsonResponse({"subscribers": sum(c.subscriber_count for c in channels if c is not None)})


class BenchTopic(Topic):
    """``bench:<name>``: open to anyone, no history, no presence (bench/topics.py)."""

    pattern = "bench:{name}"


class BenchTopics(TopicSocket):
    topics = [BenchTopic]
    throttle_classes = []  # one client subscribes to 100 channels at once


async def publish_topics(request):
    """``/publish-topics?count&rate&size&channels=K``: each message to ``bench:0`` .. ``bench:K-1``."""
    query = request.META.get("QUERY_STRING", "")
    count, rate, size = publish_params(query)
    names = [f"bench:{i}" for i in range(int(request.GET.get("channels", "1")))]

    async def to_every_channel(message):
        for name in names:
            await BenchTopic.publish(dict(message), name)

    spawn(publish_loop(count, rate, size, to_every_channel))
    return JsonResponse({"ok": True})


async def topic_stats(request):
    channel = registry.get(request.GET.get("channel", "bench:0"))
    return JsonResponse({"subscribers": channel.subscriber_count if channel is not None else 0})


router = Router()
WS_VIEW = FanoutRelay if os.environ.get("BENCH_RELAY") else FanoutWS
router.register_websocket("/ws", FanoutAsWritten if os.environ.get("BENCH_AS_WRITTEN") else WS_VIEW)
router.register_websocket("/topics", BenchTopics)
router.register_sse("/sse", FanoutSSERelay if os.environ.get("BENCH_RELAY") else FanoutSSE)

urlpatterns = [
    path("publish", publish), path("stats", stats), path("publish-topics", publish_topics),
    path("topic-stats", topic_stats), path("", include(router.urls)),
]

application = CoreApp(routers=[router], http_app=django_http)
