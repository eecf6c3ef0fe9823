"""Minimal Django settings for the Django-based peers (independent of the project's settings).

``BENCH_URLCONF`` picks the peer module that holds ``urlpatterns``;
``BENCH_CHANNEL_LAYER=redis_pubsub`` switches the Channels peer from the in-memory
layer to ``channels_redis.pubsub.RedisPubSubChannelLayer`` (Redis at ``BENCH_REDIS_URL``).
"""

import os

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
MIDDLEWARE: list = []
ROOT_URLCONF = os.environ.get("BENCH_URLCONF", "bench.peers.channels_idiom")
DATABASES: dict = {}
USE_TZ = True
LOGGING_CONFIG = None

if os.environ.get("BENCH_CHANNEL_LAYER") == "redis_pubsub":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
