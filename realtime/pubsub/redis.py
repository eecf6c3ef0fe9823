"""The Redis behind several processes: where it is (``settings.REDIS_URL``) and how clients reach it.

Used by the history streams here and by everything else that shares that Redis (presence, the
ops snapshots, the cluster channel layer, a login-throttle cache), so they all wait and reconnect
the same way, and one setting says whether that Redis is one server or a Redis Cluster:

- ``redis://host:port/db`` (or ``rediss://``, ``unix://``): one server;
- ``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://`` with TLS): a Redis Cluster,
  reached from any of its nodes (the others are discovered). Every key of a channel carries its
  hash tag (:func:`channel_tag`), so each script and each channel's keys stay in one slot.

A scheme rather than a second setting: ``REDIS_URL`` is already what every part reads, the same
environment variable moves a deployment from one server to a cluster, and the system checks that
pair ``REDIS_URL`` with ``CHANNEL_LAYERS`` keep working unchanged.
"""

from __future__ import annotations

from typing import Any

#: Seconds a command (or a connection attempt) may take before Redis counts as unreachable.
COMMAND_TIMEOUT = 5.0
#: The blocking reader's socket timeout: longer than any ``block_ms`` it is given, so a Redis that
#: vanished without closing the connection (a partition) is noticed instead of awaited forever.
READER_TIMEOUT = 30.0
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def redis_url() -> str | None:
    """``settings.REDIS_URL``, or None for single-process set-ups."""
    from django.conf import settings

    return getattr(settings, "REDIS_URL", None) or None


def is_cluster(url: str | None) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``)."""
    return bool(url) and url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def startup_nodes(url: str) -> list[tuple[str, int]]:
    """The ``(host, port)`` pairs of a ``redis+cluster://a:7000,b:7001`` URL."""
    rest = url.split("://", 1)[1]
    hosts = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    nodes = []
    for part in hosts.split(","):
        host, _, port = part.strip().rpartition(":")
        nodes.append((host or "127.0.0.1", int(port or 6379)))
    return nodes


def _cluster_url(url: str) -> str:
    """The first node as the plain URL redis-py's cluster client parses (credentials and TLS kept)."""
    scheme, rest = url.split("://", 1)
    auth = rest.split("/", 1)[0].rsplit("@", 1)[0] + "@" if "@" in rest.split("/", 1)[0] else ""
    host, port = startup_nodes(url)[0]
    return f"{scheme.split('+', 1)[0]}://{auth}{host}:{port}"


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


def cluster_options(socket_timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
    """The cluster client's options: bounded waits; a failed command refreshes the slot map and is
    retried on the new owner a few times (a failover takes about ``cluster-node-timeout``)."""
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    return {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": COMMAND_TIMEOUT,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.1), 6),
        "require_full_coverage": False,
    }


def async_client(url: str | None = None, socket_timeout: float = COMMAND_TIMEOUT) -> Any:
    """An asyncio client of ``url`` (default ``REDIS_URL``): ``Redis``, or ``RedisCluster`` for a cluster URL."""
    from redis import asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    url = url or redis_url()
    if url is None:
        raise ValueError("REDIS_URL is not set")
    if is_cluster(url):
        nodes = [ClusterNode(host, port) for host, port in startup_nodes(url)]
        return RedisCluster.from_url(_cluster_url(url), startup_nodes=nodes, **cluster_options(socket_timeout))
    return aioredis.Redis.from_url(url, **client_options(socket_timeout))


def sync_client(url: str | None = None) -> Any:
    """A synchronous client of ``url`` (default ``REDIS_URL``), for management commands and caches."""
    import redis
    from redis.cluster import ClusterNode, RedisCluster

    url = url or redis_url()
    if url is None:
        raise ValueError("REDIS_URL is not set")
    options = {"socket_timeout": COMMAND_TIMEOUT, "socket_connect_timeout": COMMAND_TIMEOUT}
    if is_cluster(url):
        nodes = [ClusterNode(host, port) for host, port in startup_nodes(url)]
        return RedisCluster.from_url(_cluster_url(url), startup_nodes=nodes, require_full_coverage=False, **options)
    return redis.Redis.from_url(url, **options)


#: The hash-tag buckets of channel keys: a channel's keys all carry ``{rt:<n>}``, n = crc32(name) % 16.
#: One slot per channel (scripts and multi-key commands work on a cluster), and at most 16 slots for
#: every channel together, so one blocking ``XREAD`` per bucket reads every stream on a cluster.
#: Fixed: changing it would move every key.
TAG_BUCKETS = 16


def channel_tag(name: str) -> str:
    """The hash tag every key of channel ``name`` carries (``{rt:<bucket>}``): one slot per channel."""
    import zlib

    return f"{{rt:{zlib.crc32(name.encode('utf-8', 'surrogatepass')) % TAG_BUCKETS}}}"
