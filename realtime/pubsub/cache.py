"""Django's Redis cache on the ``REDIS_URL`` client (one server, a Redis Cluster or a Sentinel master), for
the login throttle.

``CACHES = {"default": {"BACKEND": "realtime.pubsub.cache.RealtimeRedisCache", "LOCATION": REDIS_URL}}``:
Django's own ``RedisCache`` builds a single-server pool, which a ``redis+cluster://`` URL cannot
name (nor a ``redis+sentinel://`` one); this one takes its client from
:func:`realtime.pubsub.redis.sync_client`, so it follows the master after a failover. On a cluster,
``get_many``/``set_many``/``delete_many`` need their keys in one slot (the login throttle uses
``get`` and ``set`` only).
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

from .redis import sync_client


class RealtimeRedisCacheClient(RedisCacheClient):
    """One client of ``REDIS_URL``'s kind, shared by reads and writes."""

    def __init__(self, servers: list[str], **options: Any) -> None:
        super().__init__(servers, **options)
        self._shared: Any = None

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        if self._shared is None:
            self._shared = sync_client(self._servers[0])
        return self._shared


class RealtimeRedisCache(RedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        # One Redis of REDIS_URL's kind: Django splits LOCATION at commas, which separate a cluster's
        # nodes or the sentinels inside that one URL.
        self._servers = [server] if isinstance(server, str) else list(server)
        self._class = RealtimeRedisCacheClient
