"""A Channels layer on Redis Cluster sharded pub/sub (``SSUBSCRIBE``/``SPUBLISH``, Redis 7).

``CHANNEL_LAYERS = {"default": {"BACKEND": "realtime.pubsub.sharded.RedisClusterChannelLayer",
"CONFIG": {"hosts": [REDIS_URL]}}}`` with ``REDIS_URL = "redis+cluster://host:7000"`` (the hosts
default to ``REDIS_URL``). It implements the channel-layer API (``new_channel``, ``send``,
``receive``, ``group_add``, ``group_discard``, ``group_send``, ``flush``), so plain Channels
consumers use it as they use channels-redis.

- A group is the sharded channel ``<prefix>:g:{<group>}``; a process subscribes to it once, on its
  first local member, whatever the number of members, and unsubscribes with its last. A group's
  messages go to one master (the slot's), so masters share the groups between them.
- Channels are process-local (``new_channel`` names carry this process's id after ``!``); a
  ``send`` to another process's channel goes to that process's inbox ``<prefix>:p:{<process>}``.
  Channels without ``!`` (``runworker`` consumers) are not supported: they need a queue in Redis.
- Delivery is at most once, like every pub/sub: a message published while a subscriber's master is
  failing over is lost for it. The listener notices (a broken connection, a ``sunsubscribe`` sent
  by a slot that moved) and resubscribes every group on the slot's current owner, refreshing the
  slot map; what it could not deliver is counted (:attr:`undelivered`, in the ops snapshot under
  ``broker.layer``) and logged on the ``realtime.layer`` logger: a publish that failed after the
  client's retries (its caller gets the error as well), and a message for a local channel whose
  queue was full (``capacity``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any

from .local_layer import ProcessLocalLayer
from .redis import async_client, redis_url

logger = logging.getLogger("realtime.layer")

#: Every live layer of this process, for the ops snapshot (``figures()``); weak, so none is kept alive.
layers: weakref.WeakSet[RedisClusterChannelLayer] = weakref.WeakSet()


class RedisClusterChannelLayer(ProcessLocalLayer):
    """Groups on sharded pub/sub, one subscription per group per process; channels in this process."""

    def __init__(self, hosts: list[str] | None = None, prefix: str = "asgi", capacity: int = 100,
                 expiry: int = 60, group_expiry: int = 86400, channel_capacity: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(prefix=prefix, capacity=capacity, expiry=expiry, channel_capacity=channel_capacity)
        self.url = (hosts or [None])[0]
        #: Times the listener resubscribed after a failover or a slot move.
        self.resubscribes = 0
        self._client: Any = None
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        layers.add(self)

    # -- names ------------------------------------------------------------------------------------

    def group_address(self, group: str) -> str:
        return f"{self.prefix}:g:{{{group}}}"

    def process_address(self, process: str) -> str:
        return f"{self.prefix}:p:{{{process}}}"

    # -- the client and the listener -----------------------------------------------------------------

    async def connect(self) -> None:
        """The cluster client, this process's inbox subscription and the listener, for the running loop."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests; a reloaded server): start over on it
            self._loop, self._client, self._pubsub, self._listener = loop, None, None, None
            self._lock = asyncio.Lock()
        if self._client is None:
            self._client = async_client(self.url or redis_url())
        if self._listener is None or self._listener.done():
            assert self._lock is not None
            async with self._lock:
                if self._listener is None or self._listener.done():
                    await self._subscribe_all()
                    self._listener = loop.create_task(self._listen())

    async def _subscribe_all(self) -> None:
        """A new sharded pub/sub on the current slot map, subscribed to the inbox and every local group."""
        old, self._pubsub = self._pubsub, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.aclose()
        await self._client.initialize()
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.ssubscribe(self.process_address(self.process), *(self.group_address(g) for g in self.groups))
        self._pubsub = pubsub

    async def _listen(self) -> None:
        delay = 0.1
        unready = 0
        while True:
            try:
                try:
                    message = await self._pubsub.get_sharded_message(ignore_subscribe_messages=False, timeout=0.05)
                except RuntimeError:  # a node's subscription is still connecting (an ssubscribe in flight)
                    unready += 1
                    if unready > 100:  # a second: that subscription failed; start over
                        raise
                    await asyncio.sleep(0.01)
                    continue
                unready = 0
                if message is None:
                    await asyncio.sleep(0)
                    continue
                delay = 0.1
                kind = message["type"]
                kind = kind.decode() if isinstance(kind, bytes) else kind
                if kind == "smessage":
                    self.fan_in(message["data"])
                elif kind == "sunsubscribe" and self._wanted(message["channel"]):
                    raise ConnectionError("a subscribed slot moved")  # Redis unsubscribed us: resubscribe
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning("Sharded pub/sub lost (%s); resubscribing on the current slot owners", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                try:
                    assert self._lock is not None
                    async with self._lock:  # a group_add meanwhile waits, then subscribes on the new one
                        await self._client.nodes_manager.initialize()
                        await self._subscribe_all()
                    self.resubscribes += 1
                except Exception as again:
                    logger.warning("Resubscribing failed: %s", again)

    def _wanted(self, channel: Any) -> bool:
        name = channel.decode() if isinstance(channel, bytes) else channel
        return name == self.process_address(self.process) or any(name == self.group_address(g) for g in self.groups)

    # -- the channel layer API ------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self.connect()
        members = self.groups[group]
        first = not members
        members.add(channel)
        if first:
            try:
                assert self._lock is not None
                async with self._lock:  # not during a resubscription (which includes this group if it ran)
                    if self._pubsub is not None:
                        await self._pubsub.ssubscribe(self.group_address(group))
            except Exception:
                members.discard(channel)
                if not members:
                    self.groups.pop(group, None)
                raise

    async def left(self, group: str) -> None:
        if self._pubsub is not None and self._loop is asyncio.get_running_loop():
            with contextlib.suppress(Exception):
                await self._pubsub.sunsubscribe(self.group_address(group))

    async def publish_payload(self, address: str, data: bytes) -> None:
        await self._client.spublish(address, data)

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and self._loop is asyncio.get_running_loop():
            listener.cancel()
            with contextlib.suppress(BaseException):
                await listener
        pubsub, self._pubsub = self._pubsub, None
        client, self._client = self._client, None
        for closing in (pubsub, client):
            if closing is not None:
                with contextlib.suppress(Exception):
                    await closing.aclose()

    def subscriptions(self) -> int:
        """Sharded channels this process is subscribed to (its inbox and one per group)."""
        return len(self.groups) + (1 if self._pubsub is not None else 0)


def figures() -> dict[str, Any]:
    """The ops snapshot's ``broker.layer``: what every cluster layer of this process could not deliver."""
    alive = list(layers)
    return {
        "undelivered": sum(layer.undelivered for layer in alive),
        "resubscribes": sum(layer.resubscribes for layer in alive),
        "groups": sum(len(layer.groups) for layer in alive),
    }
