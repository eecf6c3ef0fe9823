"""System checks (``manage.py check``, and before ``runserver``, ``migrate``, ``test``): the set-up
mistakes that otherwise show only when a client arrives, or never.

======================  =======  ===================================================================
``realtime.W001``       warning  ``daphne`` is not in ``INSTALLED_APPS``: ``runserver`` serves no WebSocket
``realtime.E001``       error    ``daphne`` is installed, but ``runserver`` is another app's (an app before it)
``realtime.E002``       error    no ``ASGI_APPLICATION``
``realtime.E003``       error    ``ASGI_APPLICATION`` cannot be imported (or its routers refuse a route)
``realtime.E004``       error    ``ASGI_APPLICATION`` is Django's own handler: the default ``asgi.py``
``realtime.W002``       warning  no ``CoreApp`` or protocol router found in ``ASGI_APPLICATION``
``realtime.E010``       error    ``REDIS_URL`` is set, but the channel layer is this process's memory
``realtime.E011``       error    the channel layer crosses processes, but ``REDIS_URL`` is not set
``realtime.W010``       warning  only the ``REDIS_URL`` *environment variable* is set
``realtime.E012``       error    ``REDIS_URL`` names a Redis Cluster (or a Sentinel master), but the
                                 layer does not reach one (or the other way round)
``realtime.E013``       error    ``NATS_URL`` is set, but the layer is not the NATS layer (or the other
                                 way round)
``realtime.W011``       warning  NATS without ``REDIS_URL``: lifecycle events, idempotency records and
                                 the ops snapshots stay in each process (they are Redis-only)
======================  =======  ===================================================================

daphne runs no system checks: :class:`realtime.CoreApp` logs the ``E01x``/``W010`` findings when it
is built (:func:`log_at_start`), so a server started straight from ``daphne`` says them too.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.checks import CheckMessage

logger = logging.getLogger("realtime.checks")

TAG = "realtime"
IN_MEMORY = "channels.layers.InMemoryChannelLayer"
CLUSTER_LAYER_PATH = "realtime.pubsub.sharded.RedisClusterChannelLayer"
CLUSTER_LAYER = (
    f'CHANNEL_LAYERS = {{"default": {{"BACKEND": "{CLUSTER_LAYER_PATH}", "CONFIG": {{"hosts": [REDIS_URL]}}}}}}'
)
NATS_LAYER_PATH = "realtime.pubsub.nats.NatsChannelLayer"
NATS_LAYER = f'CHANNEL_LAYERS = {{"default": {{"BACKEND": "{NATS_LAYER_PATH}", "CONFIG": {{"hosts": [NATS_URL]}}}}}}'
REDIS_LAYER = (
    'CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", '
    '"CONFIG": {"hosts": [REDIS_URL]}}}'
)
SENTINEL_LAYER = (
    'CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", '
    '"CONFIG": {"hosts": [channel_layer_host(REDIS_URL)]}}} (from realtime.pubsub.redis import channel_layer_host)'
)
ASGI_EXAMPLE = (
    'In <project>/asgi.py: "application = CoreApp(routers=[api])" (see the docs, docs/tutorial/install.md), '
    'and in settings: ASGI_APPLICATION = "<project>.asgi.application".'
)


def register_checks() -> None:
    """Called by ``RealtimeConfig.ready()``."""
    checks.register(check_daphne, TAG)
    checks.register(check_asgi_application, TAG)
    checks.register(check_processes, TAG)


# -- INSTALLED_APPS ---------------------------------------------------------------------------------


def check_daphne(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``runserver`` must be daphne's, or it serves plain WSGI: WebSockets 404, SSE streams hang."""
    from django.apps import apps
    from django.core.management import get_commands

    if not apps.is_installed("daphne"):
        return [checks.Warning(
            '"daphne" is not in INSTALLED_APPS: manage.py runserver is then Django\'s WSGI server, where '
            "WebSockets answer 404 and SSE streams hang.",
            hint='Put "daphne" first in INSTALLED_APPS: INSTALLED_APPS = ["daphne", *INSTALLED_APPS]. '
                 "(Served only by uvicorn, never runserver? Silence this with "
                 'SILENCED_SYSTEM_CHECKS = ["realtime.W001"].)',
            id="realtime.W001",
        )]
    provider = get_commands().get("runserver")
    if provider != "daphne":
        return [checks.Error(
            f'"daphne" is in INSTALLED_APPS, but after {provider!r}, whose runserver wins: manage.py '
            "runserver then serves plain WSGI, where WebSockets answer 404 and SSE streams hang.",
            hint=f'Move "daphne" to the start of INSTALLED_APPS, before {provider!r}: '
                 'INSTALLED_APPS = ["daphne", ...].',
            id="realtime.E001",
        )]
    return []


# -- ASGI_APPLICATION -------------------------------------------------------------------------------


def check_asgi_application(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``ASGI_APPLICATION`` names the project's ``CoreApp`` (what daphne and ``realtime_routes`` load)."""
    from django.utils.module_loading import import_string

    dotted = getattr(settings, "ASGI_APPLICATION", None)
    if not dotted:
        return [checks.Error(
            "ASGI_APPLICATION is not set: manage.py runserver cannot serve WebSockets, and realtime_routes "
            "lists every app's routing.router instead of what the server serves.",
            hint=ASGI_EXAMPLE,
            id="realtime.E002",
        )]
    try:
        application = import_string(dotted)
    except Exception as error:  # any error of the project's asgi.py is the finding
        return [checks.Error(
            f"ASGI_APPLICATION {dotted!r} cannot be loaded: {type(error).__name__}: {error}",
            hint="Fix the error above; daphne would stop with it at start-up.",
            id="realtime.E003",
        )]
    kind = application_kind(application)
    if kind == "django":
        return [checks.Error(
            f"ASGI_APPLICATION {dotted!r} is Django's own ASGIHandler (the asgi.py of startproject): it "
            "refuses every WebSocket with \"ValueError: Django can only handle ASGI/HTTP connections\".",
            hint=ASGI_EXAMPLE,
            id="realtime.E004",
        )]
    if kind is None:
        return [checks.Warning(
            f"No realtime CoreApp (or Channels ProtocolTypeRouter) was found in ASGI_APPLICATION {dotted!r}, "
            "looking through the middleware around it (their .app, .inner or .application).",
            hint=f"{ASGI_EXAMPLE} A wrapper of your own: keep the wrapped app as its .app attribute.",
            id="realtime.W002",
        )]
    return []


def application_kind(application: Any) -> str | None:
    """``"realtime"`` (a CoreApp or a protocol router), ``"django"`` (ASGIHandler) or None, looking
    through ASGI middleware as ``realtime_routes`` does. A CoreApp is what has ``routers``, as
    ``realtime_routes`` finds it (and realtime.app, which logs these checks, is not imported here)."""
    from channels.routing import ProtocolTypeRouter
    from django.core.handlers.asgi import ASGIHandler

    for _ in range(10):
        if getattr(application, "routers", None) is not None or isinstance(application, ProtocolTypeRouter):
            return "realtime"
        if isinstance(application, ASGIHandler):
            return "django"
        application = next(
            (getattr(application, name) for name in ("app", "inner", "application") if hasattr(application, name)),
            None,
        )
        if application is None:
            return None
    return None


# -- several processes: REDIS_URL and CHANNEL_LAYERS ------------------------------------------------


def check_processes(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``settings.REDIS_URL`` and a cross-process channel layer go together, or neither is set."""
    from .pubsub.nats import nats_url
    from .pubsub.redis import redis_url

    url = redis_url()
    alias = "default"
    backend = (getattr(settings, "CHANNEL_LAYERS", None) or {}).get(alias, {}).get("BACKEND")
    crossing = backend is not None and not _in_memory(backend)
    layer = f"CHANNEL_LAYERS[{alias!r}] is {backend}" if backend else "there is no CHANNEL_LAYERS"
    if nats_url() is not None or backend == NATS_LAYER_PATH:
        return check_nats(url, backend, layer)
    if url and not crossing:
        return [checks.Error(
            f"settings.REDIS_URL is set, but {layer}: presence and history are shared through Redis, "
            "while a publish on a Channel without history reaches this process only.",
            hint=f"Add {REDIS_LAYER} (pip install \"django-realtime-endpoints[redis]\"), or remove REDIS_URL "
                 "to run one process.",
            id="realtime.E010",
        )]
    if crossing and not url:
        found = _layer_url(alias)
        value = repr(found) if found else 'os.environ["REDIS_URL"]'
        return [checks.Error(
            f"{layer}, so publishes reach every process, but settings.REDIS_URL is not set: presence, "
            "history ids (a client resuming on another process is told the wrong thing) and the ops "
            "snapshots (admin page, realtime_status) stay in each process.",
            hint=f"Set REDIS_URL = {value} in settings, the layer's Redis (realtime reads the Django "
                 "setting, not the environment).",
            id="realtime.E011",
        )]
    if url and crossing:
        mismatch = _redis_mismatch(url, backend, alias)
        if mismatch is not None:
            return [mismatch]
    if not url and not crossing and os.environ.get("REDIS_URL"):
        return [checks.Warning(
            "The REDIS_URL environment variable is set, but realtime reads the Django setting REDIS_URL, "
            f"which is not set, and {layer}: every process runs alone, and a publish never reaches another.",
            hint=f'For several processes, in settings: REDIS_URL = os.environ.get("REDIS_URL") and {REDIS_LAYER}. '
                 'For one process on purpose: SILENCED_SYSTEM_CHECKS = ["realtime.W010"].',
            id="realtime.W010",
        )]
    return []


def check_nats(redis: str | None, backend: str | None, layer: str) -> list[CheckMessage]:
    """NATS as the broker: ``settings.NATS_URL`` and the NATS layer go together; Redis for the rest."""
    from .pubsub.nats import nats_url

    if nats_url() is None:
        return [checks.Error(
            f"{layer}, but settings.NATS_URL is not set: history channels keep their history "
            + ("in Redis" if redis else "in each process") + " while the layer is NATS.",
            hint='Set NATS_URL = os.environ.get("NATS_URL") in settings (realtime reads the Django setting).',
            id="realtime.E013",
        )]
    if backend != NATS_LAYER_PATH:
        return [checks.Error(
            f"settings.NATS_URL is set, so history channels are on NATS JetStream, but {layer}: "
            "a publish on a Channel without history does not go through NATS.",
            hint=f"Use {NATS_LAYER} (pip install nats-py), or remove NATS_URL.",
            id="realtime.E013",
        )]
    if redis is None:
        return [checks.Warning(
            "settings.NATS_URL is set and REDIS_URL is not: publishes, history and presence are shared on NATS "
            "(presence is shared on NATS KV), but lifecycle events, idempotency records, the ops snapshots and "
            "the login throttle's cache are Redis-only, so they stay in each process.",
            hint="Set REDIS_URL too (Redis for those, NATS for the rest), or accept them per process: "
                 'SILENCED_SYSTEM_CHECKS = ["realtime.W011"].',
            id="realtime.W011",
        )]
    return []


def _in_memory(backend: str) -> bool:
    """Whether the layer ``backend`` (a dotted path) keeps messages in this process."""
    from django.utils.module_loading import import_string

    try:
        from channels.layers import InMemoryChannelLayer

        layer_class = import_string(backend)
    except ImportError:
        return backend == IN_MEMORY
    return isinstance(layer_class, type) and issubclass(layer_class, InMemoryChannelLayer)


_REDIS_KINDS = {"cluster": "a Redis Cluster", "sentinel": "a master found through Redis Sentinel",
                "server": "one Redis server"}


def _redis_mismatch(url: str, backend: str, alias: str) -> CheckMessage | None:
    """``realtime.E012``: ``REDIS_URL`` and the layer must reach the same kind of Redis. A layer on one
    fixed server beside a Sentinel URL is the dangerous one: it keeps publishing to the old master
    after a failover (a replica then, or gone) while history and presence follow the new one."""
    from .pubsub.redis import is_cluster, is_sentinel

    wanted = "cluster" if is_cluster(url) else "sentinel" if is_sentinel(url) else "server"
    if backend == CLUSTER_LAYER_PATH:
        reaches = "cluster"
    elif not backend.startswith("channels_redis."):  # another layer (NATS...): only a cluster URL is known wrong
        reaches = "server" if wanted == "cluster" else wanted
    else:
        hosts = (settings.CHANNEL_LAYERS.get(alias, {}).get("CONFIG") or {}).get("hosts") or []
        first = hosts[0] if hosts else None
        reaches = "sentinel" if isinstance(first, dict) and "master_name" in first else "server"
    if wanted == reaches:
        return None
    layer = f"CHANNEL_LAYERS[{alias!r}] is {backend}"
    if wanted == "cluster":
        why = "channels_redis cannot reach a cluster, so publishes reach no other process."
        hint = f"Use {CLUSTER_LAYER}."
    elif reaches == "cluster":
        why = "the cluster layer needs a redis+cluster:// URL."
        hint = (f"Use {SENTINEL_LAYER}." if wanted == "sentinel" else
                f'Set REDIS_URL = "redis+cluster://host:port" (the cluster), or use {REDIS_LAYER}.')
    elif wanted == "sentinel":
        why = ("its hosts name one fixed server, which stops being the master after a failover, while history "
               "and presence follow the sentinels to the new one.")
        hint = f"Use {SENTINEL_LAYER}."
    else:
        why = "its hosts ask sentinels for a master, while history and presence use REDIS_URL's one server."
        hint = 'Set REDIS_URL = "redis+sentinel://host:26379[,host:26380]/<master name>" (the same sentinels).'
    return checks.Error(f"settings.REDIS_URL names {_REDIS_KINDS[wanted]}, but {layer}: " + why,
                        hint=hint, id="realtime.E012")


def _layer_url(alias: str) -> str | None:
    """The first Redis address of channels_redis's ``hosts``, when it is written as a URL."""
    hosts = (settings.CHANNEL_LAYERS.get(alias, {}).get("CONFIG") or {}).get("hosts") or []
    first = hosts[0] if hosts else None
    address = first.get("address") if isinstance(first, dict) else first
    return address if isinstance(address, str) else None


def log_at_start() -> None:
    """Log what :func:`check_processes` finds, for servers that run no system checks (daphne, uvicorn)."""
    silenced = set(getattr(settings, "SILENCED_SYSTEM_CHECKS", ()))
    for finding in check_processes():
        if finding.id in silenced:
            continue
        level = logging.ERROR if finding.is_serious() else logging.WARNING
        logger.log(level, "%s: %s HINT: %s", finding.id, finding.msg, finding.hint)
