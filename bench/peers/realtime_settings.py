"""Minimal Django settings for the project's own server under test (``bench/peers/realtime_app.py``).

Not the demo project's settings: no database, no middleware, no admin, so the rows measure the
``realtime`` package and the ASGI server, nothing else. ``REDIS_URL`` set (the two-process
scenario) switches every named Channel to ``channels_redis``' pub/sub layer, exactly as the
project's own settings do. ``BENCH_SLOW_CONSUMER_TIMEOUT`` (seconds) sets
``REALTIME["SLOW_CONSUMER_TIMEOUT"]``, so ``bench/slow_consumer.py`` fits a run in seconds; unset,
the package default applies.
"""

import os

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "channels", "realtime"]
MIDDLEWARE: list = []
ROOT_URLCONF = "bench.peers.realtime_app"
DATABASES: dict = {}
USE_TZ = True
LOGGING_CONFIG = None

REDIS_URL = os.environ.get("REDIS_URL") or None
if REDIS_URL and REDIS_URL.startswith("redis+cluster://"):  # the cluster row: sharded pub/sub
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "realtime.pubsub.sharded.RedisClusterChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
    }
elif REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
# NATS_URL (the "+ nats" rows, bench/nats_broker.py): the NATS layer instead, as project/settings.py does.
NATS_URL = os.environ.get("NATS_URL") or None
if NATS_URL:
    CHANNEL_LAYERS = {"default": {"BACKEND": "realtime.pubsub.nats.NatsChannelLayer", "CONFIG": {"hosts": [NATS_URL]}}}

# Every load-generator client connects from 127.0.0.1: the default per-address cap would refuse them.
REALTIME = {"MAX_CONNECTIONS_PER_IP": None, "MAX_CONNECTIONS_PER_USER": None, "MAX_SSE_STREAMS_PER_USER": None}
if os.environ.get("BENCH_SLOW_CONSUMER_TIMEOUT"):
    REALTIME["SLOW_CONSUMER_TIMEOUT"] = float(os.environ["BENCH_SLOW_CONSUMER_TIMEOUT"])
