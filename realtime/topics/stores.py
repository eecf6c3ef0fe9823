"""Which presence store serves this process: Redis with ``REDIS_URL``, NATS KV with ``NATS_URL`` alone,
else this process's memory.

Apart from :mod:`realtime.topics.presence` (the Redis and memory stores) and
:mod:`realtime.topics.kv_presence` (NATS KV, which reuses presence's member and reaping helpers),
so that neither of them imports the other's module to pick one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..pubsub.redis import redis_url
from .presence import RedisPresence, memory_presence

_redis_stores: dict[asyncio.AbstractEventLoop, Any] = {}


def presence_store() -> Any:
    """Redis presence when ``REDIS_URL`` is set (one client per event loop); NATS KV presence
    (:mod:`realtime.topics.kv_presence`) when only ``NATS_URL`` is; else this process's memory."""
    from ..pubsub.nats import nats_url

    url = redis_url()
    nats = nats_url() if url is None else None
    if url is None and nats is None:
        return memory_presence
    loop = asyncio.get_running_loop()
    store = _redis_stores.get(loop)
    if store is None or store.url != (url or nats):
        for old in [old for old in _redis_stores if old.is_closed()]:
            del _redis_stores[old]
        if url is not None:
            store = RedisPresence(url)
        else:
            from .kv_presence import KVPresence

            store = KVPresence(nats)  # type: ignore[arg-type]  # not None: checked above
        _redis_stores[loop] = store
    return store
