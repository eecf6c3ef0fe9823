"""Settings of the demo project. Everything beyond SQLite and daphne is opt-in through environment
variables: REDIS_URL or NATS_URL (several processes), DJANGO_DEBUG, DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS."""

import os
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

#: Public, so anyone can sign tokens with it: only ever used with DEBUG on (``make run``).
DEMO_SECRET_KEY = "demo-only-insecure-key-change-me-in-production-0123456789"

DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or (DEMO_SECRET_KEY if DEBUG else "")
if not DEBUG and SECRET_KEY in ("", DEMO_SECRET_KEY):
    # Raised while the settings load, so daphne, manage.py and any WSGI/ASGI server all stop here
    # (daphne runs no system checks). The demo key signs JWTs: with it anyone can forge an admin.
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off (the demo key is public: anyone could forge "
        "tokens with it). Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(50))'; "
        "scripts/run-prod creates and keeps one for you."
    )
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",  # logout and rotation revoke refresh tokens
    "channels",
    "realtime",
    "project.demo",
    "project.trading",
    "project.chat",
]

MIDDLEWARE = [
    "django.middleware.gzip.GZipMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_SQLITE_PATH", BASE_DIR / "db.sqlite3"),
    }
}
if os.environ.get("POSTGRES_DB"):  # PostgreSQL instead (the tests use it to count connections)
    DATABASES["default"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["POSTGRES_DB"],
        "HOST": os.environ.get("POSTGRES_HOST", "127.0.0.1"),
        "PORT": os.environ.get("POSTGRES_PORT", "5432"),
        "USER": os.environ.get("POSTGRES_USER", "postgres"),
        "PASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
    }

# One switch moves every Channel from one process to many.
REDIS_URL = os.environ.get("REDIS_URL") or None
if REDIS_URL and REDIS_URL.split("://")[0].endswith("+cluster"):  # a Redis Cluster: sharded pub/sub
    CHANNEL_LAYERS = {"default": {"BACKEND": "realtime.pubsub.sharded.RedisClusterChannelLayer",
                                  "CONFIG": {"hosts": [REDIS_URL]}}}
elif REDIS_URL:  # one server, or a master found through Redis Sentinel (redis+sentinel://)
    from realtime.pubsub.redis import channel_layer_host

    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            # {"address": REDIS_URL} or {"sentinels": [...], "master_name": ...}, with bounded waits, so a
            # publish to a Redis that vanished without closing fails instead of hanging.
            "CONFIG": {"hosts": [channel_layer_host(REDIS_URL)]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# NATS instead: NATS_URL=nats://127.0.0.1:4222 moves the channel layer, history (JetStream) and presence
# (NATS KV, when REDIS_URL is not set) to NATS. Lifecycle events, idempotency records, the ops snapshots and
# the login throttle stay on Redis (REDIS_URL, when set too; without it per process: check realtime.W011).
NATS_URL = os.environ.get("NATS_URL") or None
if NATS_URL:
    CHANNEL_LAYERS = {"default": {"BACKEND": "realtime.pubsub.nats.NatsChannelLayer", "CONFIG": {"hosts": [NATS_URL]}}}

# Prometheus metrics for a scraper on this machine, one port per daphne process (scripts/run-prod sets
# 9101, 9102); staff also read them at /admin/realtime/metrics.
REALTIME = {"METRICS_PORT": int(os.environ["REALTIME_METRICS_PORT"])} if os.environ.get("REALTIME_METRICS_PORT") else {}

# Login throttles (realtime.login, on /api/auth/token/) count in Django's cache: the default
# LocMemCache is per process, so each daphne counts on its own; with REDIS_URL they share Redis.
LOCMEM = "django.core.cache.backends.locmem.LocMemCache"
CACHES = {"default": {"BACKEND": LOCMEM}}
if REDIS_URL:  # realtime's cache backend reaches a Redis Cluster and a Sentinel master as well
    CACHES = {"default": {"BACKEND": "realtime.pubsub.cache.RealtimeRedisCache", "LOCATION": REDIS_URL}}
# The chat's list of who is online (project/chat/online.py), kept from realtime's lifecycle events:
# shared by every process in the REDIS_URL Redis, where the lifecycle events keep their own state,
# or in this one process's memory without it. An alias of its own, so no other key's culling drops it.
CACHES["online"] = ({**CACHES["default"], "KEY_PREFIX": "demo"} if REDIS_URL
                    else {"BACKEND": LOCMEM, "LOCATION": "demo-online"})
DEMO_ONLINE_LIST = os.environ.get("DEMO_ONLINE_LIST", "1") == "1"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "login_username": "10/min",  # attempts on one username from one address
        "login_username_global": "30/min",  # on one username from all addresses: over it, one per address a minute
        "login_address": "30/min",  # attempts per client address, whatever the username
    },
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=int(os.environ.get("JWT_ACCESS_MINUTES", "15"))),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=1),
    # Each refresh returns a new refresh token and blacklists the one used: a stolen refresh token
    # works once at most, and logout (which blacklists the caller's) ends the session.
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "realtime": {
            "handlers": ["console"],
            "level": os.environ.get("REALTIME_LOG_LEVEL", "INFO"),
            "propagate": False,
        }
    },
}
