"""The Redis behind several processes: where it is (``settings.REDIS_URL``) and how clients reach it.

Used by the history streams here and by everything else that shares that Redis (presence, the
ops snapshots), so they all wait and reconnect the same way.
"""

from __future__ import annotations

from typing import Any

#: Seconds a command (or a connection attempt) may take before Redis counts as unreachable.
COMMAND_TIMEOUT = 5.0
#: The blocking reader's socket timeout: longer than any ``block_ms`` it is given, so a Redis that
#: vanished without closing the connection (a partition) is noticed instead of awaited forever.
READER_TIMEOUT = 30.0


def redis_url() -> str | None:
    """``settings.REDIS_URL``, or None for single-process set-ups."""
    from django.conf import settings

    return getattr(settings, "REDIS_URL", None) or None


def client_options(socket_timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
    """Connection options for redis-py clients: bounded waits, one reconnect on a broken connection."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    return {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": COMMAND_TIMEOUT,
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        "retry_on_error": [RedisConnectionError],
    }
