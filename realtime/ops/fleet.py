"""Every process of the deployment, through Redis: each publishes its snapshot, anyone reads them all.

With ``REDIS_URL`` set, each serving process (the first time CoreApp is called) starts a task that
writes its snapshot every ``OPS_SNAPSHOT_INTERVAL`` seconds to ``<OPS_KEY_PREFIX>:process:<id>``
with an expiry of three intervals, so a process that is gone drops off by itself. Without Redis a
process can only see itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ..conf import setting
from ..pubsub.channel import PROCESS_ID
from ..pubsub.redis import async_client, is_cluster, redis_url, sync_client
from . import snapshot

logger = logging.getLogger("realtime.ops")

#: Whether this process has started publishing (CoreApp checks it on each call).
started = False
_task: asyncio.Task[None] | None = None

__all__ = ["PROCESS_ID", "read", "read_sync", "start"]


def _key_pattern() -> str:
    return f"{setting('OPS_KEY_PREFIX')}:process:*"


def _key() -> str:
    return f"{setting('OPS_KEY_PREFIX')}:process:{PROCESS_ID}"


def _ttl() -> int:
    return max(10, int(3 * float(setting("OPS_SNAPSHOT_INTERVAL"))))


def start() -> None:
    """Start publishing this process's snapshots (with Redis); called once, from the event loop."""
    global started, _task
    started = True
    if redis_url() is not None:
        _task = asyncio.get_running_loop().create_task(_publish_forever())


async def _publish_forever() -> None:
    client = async_client(redis_url())
    failing = False
    try:
        while True:
            try:
                await client.set(_key(), json.dumps(snapshot.take()), ex=_ttl())
                failing = False
            except Exception as error:
                if not failing:
                    logger.warning("Could not publish this process's snapshot to Redis: %s", error)
                failing = True
            await asyncio.sleep(float(setting("OPS_SNAPSHOT_INTERVAL")))
    finally:
        await client.aclose()


def _merge(values: list[Any], own: dict[str, Any] | None) -> list[dict[str, Any]]:
    snapshots = {}
    for value in values:
        if value:
            data = json.loads(value)
            snapshots[data["process"]["id"]] = data
    if own is not None:
        snapshots[own["process"]["id"]] = own  # fresher than what it published
    return sorted(snapshots.values(), key=lambda s: (s["process"]["host"], s["process"]["pid"]))


async def read(include_self: bool = True) -> dict[str, Any]:
    """``{"shared": bool, "error": str | None, "processes": [snapshot, ...]}`` for the whole deployment."""
    own = snapshot.take() if include_self else None
    url = redis_url()
    if url is None:
        return {"shared": False, "error": None, "processes": [own or snapshot.take()]}
    client = async_client(url)
    try:
        keys = [key async for key in client.scan_iter(match=_key_pattern(), count=500)]
        # On a cluster each process's key is in a slot of its own: MGET per slot (mget_nonatomic).
        mget = client.mget_nonatomic if is_cluster(url) else client.mget
        values = await mget(keys) if keys else []
    except Exception as error:
        return {"shared": False, "error": f"Redis unreachable: {error}", "processes": [own or snapshot.take()]}
    finally:
        await client.aclose()
    return {"shared": True, "error": None, "processes": _merge(values, own)}


def read_sync(include_self: bool = False) -> dict[str, Any]:
    """``read`` for synchronous code (``manage.py realtime_status``)."""
    own = snapshot.take() if include_self else None
    url = redis_url()
    if url is None:
        return {"shared": False, "error": None, "processes": [snapshot.take()]}
    client = sync_client(url)
    try:
        keys = list(client.scan_iter(match=_key_pattern(), count=500))
        values = (client.mget_nonatomic if is_cluster(url) else client.mget)(keys) if keys else []
    except Exception as error:
        return {"shared": False, "error": f"Redis unreachable: {error}", "processes": [snapshot.take()]}
    finally:
        client.close()
    return {"shared": True, "error": None, "processes": _merge(values, own)}
