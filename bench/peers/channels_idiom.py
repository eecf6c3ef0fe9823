"""The usual Django Channels idiom: ``AsyncJsonWebsocketConsumer`` in a group + ``group_send``.

In-memory channel layer by default; ``BENCH_CHANNEL_LAYER=redis_pubsub`` uses
``RedisPubSubChannelLayer`` so two processes can share one group through Redis.

    daphne -b 127.0.0.1 -p PORT bench.peers.channels_idiom:application
"""

import os

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.http import JsonResponse
from django.urls import path

from bench.peers._common import publish_loop, publish_params, spawn

# Settings are read lazily: get_asgi_application() below runs django.setup().
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.peers.django_settings"
os.environ["BENCH_URLCONF"] = "bench.peers.channels_idiom"

GROUP = "bench"
SUBSCRIBERS = {"n": 0}


class FanoutConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()
        SUBSCRIBERS["n"] += 1

    async def disconnect(self, code):
        SUBSCRIBERS["n"] -= 1
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def bench_message(self, event):
        await self.send_json(event["data"])


async def _publish_one(message: dict) -> None:
    await get_channel_layer().group_send(GROUP, {"type": "bench.message", "data": message})


async def publish(request):
    spawn(publish_loop(*publish_params(request.META.get("QUERY_STRING", "")), _publish_one))
    return JsonResponse({"ok": True})


async def stats(request):
    return JsonResponse({"subscribers": max(SUBSCRIBERS["n"], 0)})


urlpatterns = [path("publish", publish), path("stats", stats)]

application = ProtocolTypeRouter(
    {
        "http": get_asgi_application(),
        "websocket": URLRouter([path("ws", FanoutConsumer.as_asgi())]),
    }
)
