"""The Redis behind several processes: where it is (``settings.REDIS_URL``) and how clients reach it.

Used by the history streams here and by everything else that shares that Redis (presence, the
ops snapshots, the cluster channel layer, a login-throttle cache), so they all wait and reconnect
the same way, and one setting says whether that Redis is one server, a Redis Cluster or a master
watched by Redis Sentinel:

- ``redis://host:port/db`` (or ``rediss://``, ``unix://``): one server;
- ``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://`` with TLS): a Redis Cluster,
  reached from any of its nodes (the others are discovered). Every key of a channel carries its
  hash tag (:func:`channel_tag`), so each script and each channel's keys stay in one slot.
- ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db][?sentinel_password=...]``
  (``rediss+sentinel://`` with TLS to the sentinels and the servers): the master that the sentinels
  at those addresses (port 26379 when left out) know as ``service``. The user and password are the
  master's (and its replicas'); ``sentinel_password`` is for sentinels with a ``requirepass`` of
  their own. Every connection asks a sentinel where the master is when it is opened, so a
  connection broken by a failover reopens on the promoted replica by itself (:func:`sentinel_target`).

A scheme rather than a second setting: ``REDIS_URL`` is already what every part reads, the same
environment variable moves a deployment from one server to a cluster, and the system checks that
pair ``REDIS_URL`` with ``CHANNEL_LAYERS`` keep working unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Seconds a command (or a connection attempt) may take before Redis counts as unreachable.
COMMAND_TIMEOUT = 5.0
#: The blocking reader's socket timeout: longer than any ``block_ms`` it is given, so a Redis that
#: vanished without closing the connection (a partition) is noticed instead of awaited forever.
READER_TIMEOUT = 30.0
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SENTINEL_PORT = 26379


def redis_url() -> str | None:
    """``settings.REDIS_URL``, or None for single-process set-ups."""
    from django.conf import settings

    return getattr(settings, "REDIS_URL", None) or None


def is_cluster(url: str | None) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``)."""
    return bool(url) and url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def is_sentinel(url: str | None) -> bool:
    """Whether ``url`` names a master found through Redis Sentinel (``redis+sentinel://``)."""
    return bool(url) and url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL says: where the sentinels are and which master to ask them for."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False

    def server_options(self) -> dict[str, Any]:
        """Connection options of the master (database, credentials, TLS)."""
        options: dict[str, Any] = {"db": self.db}
        if self.username:
            options["username"] = self.username
        if self.password:
            options["password"] = self.password
        if self.ssl:
            options["ssl"] = True
        return options

    def sentinel_options(self) -> dict[str, Any]:
        """Connection options of the sentinels: bounded waits, their own password, TLS like the servers'."""
        options: dict[str, Any] = {"socket_timeout": COMMAND_TIMEOUT, "socket_connect_timeout": COMMAND_TIMEOUT}
        if self.sentinel_password:
            options["password"] = self.sentinel_password
        if self.ssl:
            options["ssl"] = True
        return options


def sentinel_target(url: str) -> SentinelTarget:
    """Parse ``redis+sentinel://[[user]:password@]h1:26379[,h2:26380...]/service[/db][?sentinel_password=p]``.

    Raises ValueError for a URL without a sentinel address or a service name: a mistyped URL must not
    reach some default master.
    """
    from urllib.parse import parse_qs, unquote

    scheme, rest = url.split("://", 1)
    rest, _, query = rest.partition("?")
    location, _, path = rest.partition("/")
    auth, _, hosts = location.rpartition("@")
    username, _, password = auth.partition(":")
    sentinels = []
    for part in filter(None, (p.strip() for p in hosts.split(","))):
        if part.startswith("["):  # [::1]:26379
            host, _, port = part[1:].partition("]")
            port = port.lstrip(":")
        else:
            host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
        sentinels.append((host or "127.0.0.1", int(port or SENTINEL_PORT)))
    segments = [unquote(s) for s in path.split("/") if s]
    if not sentinels or not segments or len(segments) > 2:
        # Not the URL itself: it may hold a password.
        raise ValueError("a Sentinel REDIS_URL is redis+sentinel://host:port[,host:port...]/service[/db]")
    params = parse_qs(query)
    return SentinelTarget(
        sentinels=sentinels,
        service=segments[0],
        db=int(segments[1]) if len(segments) > 1 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_password=(params.get("sentinel_password") or [None])[0],
        ssl=scheme.lower().startswith("rediss"),
    )


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
    """An asyncio client of ``url`` (default ``REDIS_URL``): ``Redis``, ``RedisCluster`` for a cluster URL,
    or a ``Redis`` whose connections are opened on the master the sentinels name for a Sentinel URL."""
    from redis import asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    url = url or redis_url()
    if url is None:
        raise ValueError("REDIS_URL is not set")
    if is_cluster(url):
        nodes = [ClusterNode(host, port) for host, port in startup_nodes(url)]
        return RedisCluster.from_url(_cluster_url(url), startup_nodes=nodes, **cluster_options(socket_timeout))
    if is_sentinel(url):
        return _async_sentinel_master(url, socket_timeout)
    return aioredis.Redis.from_url(url, **client_options(socket_timeout))


def connection_client(url: str, socket_timeout: float = READER_TIMEOUT) -> Any:
    """An asyncio client of one connection of its own, to ``url``'s server (or its master now), for
    blocking reads (``XREAD BLOCK``): a command client's pool would hand the blocked connection to
    nobody else anyway. Not for a cluster URL (a node's own address is a ``redis://`` URL)."""
    from redis import asyncio as aioredis

    if is_cluster(url):
        raise ValueError("connection_client() needs a node's own URL on a Redis Cluster")
    if is_sentinel(url):
        return _async_sentinel_master(url, socket_timeout, single_connection=True)
    return aioredis.Redis.from_url(url, single_connection_client=True, **client_options(socket_timeout))


def _async_sentinel_master(url: str, socket_timeout: float, single_connection: bool = False) -> Any:
    """The Sentinel URL's master as a ``redis.asyncio.Redis`` that closes its sentinel connections too."""
    from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

    target = sentinel_target(url)
    manager = Sentinel(target.sentinels, sentinel_kwargs=target.sentinel_options())
    pool = SentinelConnectionPool(target.service, manager, is_master=True, **target.server_options(),
                                  **client_options(socket_timeout))
    client = _async_master_class()(connection_pool=pool, single_connection_client=single_connection)
    client.auto_close_connection_pool = True  # the pool (and its sentinels) are this client's alone
    return client


_ASYNC_MASTER: Any = None


def _async_master_class() -> Any:
    """``redis.asyncio.Redis`` whose ``aclose()`` also closes the connections it opened to the sentinels
    (redis-py leaves those to the ``Sentinel`` object, which nobody else holds)."""
    global _ASYNC_MASTER
    if _ASYNC_MASTER is None:
        from redis import asyncio as aioredis

        class SentinelMaster(aioredis.Redis):
            async def aclose(self, close_connection_pool: bool | None = None) -> None:
                await super().aclose(close_connection_pool)
                if close_connection_pool or (close_connection_pool is None and self.auto_close_connection_pool):
                    await self.connection_pool.sentinel_manager.aclose()

        _ASYNC_MASTER = SentinelMaster
    return _ASYNC_MASTER


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
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.retry import Retry

    # One reconnect on a broken connection (a Redis restarted since the pooled connection was opened);
    # on Sentinel it asks the sentinels again, so it lands on the new master.
    reconnect = {"retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
                 "retry_on_error": [RedisConnectionError]}
    if is_sentinel(url):
        from redis.sentinel import Sentinel

        target = sentinel_target(url)
        manager = Sentinel(target.sentinels, sentinel_kwargs=target.sentinel_options())
        return manager.master_for(target.service, **target.server_options(), **options, **reconnect)
    return redis.Redis.from_url(url, **options, **reconnect)


def channel_layer_host(url: str) -> dict[str, Any]:
    """channels_redis's ``hosts`` entry for a one-server or Sentinel ``REDIS_URL`` (both of its layers
    take a ``{"sentinels": [...], "master_name": ...}`` entry), with bounded waits."""
    waits = {"socket_timeout": COMMAND_TIMEOUT, "socket_connect_timeout": COMMAND_TIMEOUT}
    if is_cluster(url):
        raise ValueError("channels_redis cannot reach a Redis Cluster: use realtime.pubsub.sharded")
    if not is_sentinel(url):
        return {"address": url, **waits}
    target = sentinel_target(url)
    return {"sentinels": target.sentinels, "master_name": target.service,
            "sentinel_kwargs": target.sentinel_options(), **target.server_options(), **waits}


#: The hash-tag buckets of channel keys: a channel's keys all carry ``{rt:<n>}``, n = crc32(name) % 16.
#: One slot per channel (scripts and multi-key commands work on a cluster), and at most 16 slots for
#: every channel together, so one blocking ``XREAD`` per bucket reads every stream on a cluster.
#: Fixed: changing it would move every key.
TAG_BUCKETS = 16


def channel_tag(name: str) -> str:
    """The hash tag every key of channel ``name`` carries (``{rt:<bucket>}``): one slot per channel."""
    import zlib

    return f"{{rt:{zlib.crc32(name.encode('utf-8', 'surrogatepass')) % TAG_BUCKETS}}}"
