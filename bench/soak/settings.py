"""Minimal Django settings for the soak server (``bench/soak/app.py``).

No database, no middleware: the soak measures the ``realtime`` package on daphne, nothing else.
In-memory channel layer, so ``Channel("soak")`` fans out inside the one process.
"""

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "channels", "realtime"]
MIDDLEWARE: list = []
ROOT_URLCONF = "bench.soak.app"
DATABASES: dict = {}
USE_TZ = True
LOGGING_CONFIG = None
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# No inbound throttle; clients of the soak never send, but nothing should be refused either: every
# client connects from 127.0.0.1, so the per-address and per-user caps are off too.
REALTIME = {"MESSAGE_RATE": None, "MAX_CONNECTIONS_PER_IP": None, "MAX_CONNECTIONS_PER_USER": None,
            "MAX_SSE_STREAMS_PER_USER": None}
