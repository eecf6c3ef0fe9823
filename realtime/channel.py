"""Channel: pub/sub that fans out in one process and, through the channel layer, across many.

Fan-out to this process's subscribers is a loop of ``put_nowait`` on bounded queues: ``publish``
never waits for a slow subscriber. Across processes a named Channel uses the channel-layer group
API with **one** layer subscription per process and channel (a bridge task that joins the group
when the first local subscriber arrives and leaves when the last one goes), so a publish costs the
layer work in proportion to processes, never to subscribers.

- No channel layer, or Channels' in-memory layer: everything stays in this process.
- channels-redis (``REDIS_URL`` set): a publish in any process reaches subscribers in all of them.
- An unnamed ``Channel()`` is always process-local (it has no name other processes could share).

History (``history=N``) keeps the last N messages with increasing ids: in memory (ids ``"1"``,
``"2"``...), or in a Redis Stream when ``REDIS_URL`` is set so that every process agrees on the
ids. ``subscribe(last_id=...)`` replays what came after ``last_id`` then continues live, with no
duplicate and no gap at the seam.

When Redis is unreachable, ``publish`` (and ``publish_sync``) raises ``BrokerUnavailable`` and the
message reaches **no** subscriber, not even this process's: a message is delivered everywhere or
nowhere, so a publisher can retry (or answer 503) without some users having seen it. That is why a
layer publish is sent to the broker *before* the local fan-out (local subscribers get it one Redis
round trip later). A pooled connection gone stale because Redis restarted is reconnected and the
command retried once, so the first publish after Redis returns reaches every process.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import uuid
from collections import deque
from collections.abc import Hashable
from typing import Any

from asgiref.sync import async_to_sync

from .broker import BrokerUnavailable, broker_state, reach
from .encoding import SharedMessage, wire_safe
from .history import MemoryHistory, RedisHistory, redis_url
from .ops.connections import adopt
from .ops.stats import Slot, int_slots
from .subscribers import Gap, SubscriberQueue, Subscription

logger = logging.getLogger("realtime.channel")

#: Identifies this process, so the bridge skips what this process published (already delivered).
PROCESS_ID = uuid.uuid4().hex
MESSAGE_TYPE = "realtime.publish"
_GROUP_SAFE = re.compile(r"[^a-zA-Z0-9_.-]")

__all__ = ["BrokerUnavailable", "Channel", "Gap", "group_name"]


def group_name(name: str) -> str:
    """A channel-layer group name for any channel name (``chat:room/42``, non-ASCII ...).

    Safe characters are kept for readability; a hash of the full name keeps distinct names
    distinct. Layer group names must match ``^[a-zA-Z0-9_.-]+$`` and stay under 100 characters.
    """
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).hexdigest()
    readable = _GROUP_SAFE.sub("_", name)[:60]
    return f"rt.{readable}.{digest}"


#: Named channels of this process, by name (the ``publish`` command finds them here).
registry: dict[str, Channel] = {}


class Channel:
    """A pub/sub channel. Create it once, at module level, and share it."""

    # Counters bumped on every publish and unsubscribe, kept in a C array (realtime.ops.stats.Slot).
    rejected = Slot(0)
    broker_errors = Slot(1)
    published = Slot(2)
    messages = Slot(3)
    deliveries = Slot(4)
    dropped_gone = Slot(5)

    def __init__(self, name: str | None = None, maxlen: int = 500, history: int = 0, layer: str = "default") -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError("A Channel name must be a non-empty str, e.g. Channel('ticks')")
        if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1:
            raise ValueError(f"maxlen must be a positive int, not {maxlen!r}")
        if isinstance(history, bool) or not isinstance(history, int) or history < 0:
            raise ValueError(f"history must be an int >= 0, not {history!r}")
        if history and name is None:
            raise ValueError("History needs a named Channel, e.g. Channel('trades', history=1000)")
        self.name = name
        self.maxlen = maxlen
        self.history = history
        self.layer_alias = layer
        self.group = group_name(name) if name is not None else None
        self._subscribers: dict[Any, None] = {}  # insertion-ordered set
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bridge: asyncio.Task[None] | None = None
        self._memory_history = MemoryHistory(history) if history else None
        self._redis_history: dict[asyncio.AbstractEventLoop, RedisHistory] = {}
        self._ints = int_slots(6)
        #: Messages received from other processes that were not for this one (bad payloads).
        self.rejected = 0
        #: Publishes refused with BrokerUnavailable (Redis unreachable; nobody received them).
        self.broker_errors = 0
        #: For realtime.ops: publish calls here; messages fanned out here (any process's) and the
        #: subscribers they reached; messages dropped by subscribers that have gone.
        self.published = self.messages = self.deliveries = self.dropped_gone = 0
        if name is not None:
            registry.setdefault(name, self)

    @classmethod
    def named(cls, name: str) -> Channel:
        """The channel declared under ``name`` in this process, or a new one with that name."""
        return registry.get(name) or cls(name)

    # -- the specification's API --------------------------------------------------------------

    async def publish(self, message: Any) -> int:
        """Send ``message`` to every subscriber; returns how many subscribers *in this process* got it.

        Subscribers in other processes are reached through the layer but not counted (the layer
        does not report them). Messages are shared, not copied: subscribers must not mutate them.
        Raises :class:`BrokerUnavailable` when Redis cannot be reached: then nobody got it. A
        message that is not strict JSON in UTF-8 raises ``UnencodableMessage``: nobody gets it either.
        """
        return (await self.publish_with_id(message))[0]

    async def publish_with_id(self, message: Any) -> tuple[int, str | None]:
        """``publish``, also returning the message's history id (None without history)."""
        message = wire_safe(message)
        self.published += 1
        store = self._redis()
        if store is not None:
            return await self._publish_to_stream(store, message)
        message_id = self._memory_history.append(message) if self._memory_history is not None else None
        layer = self._layer()
        if layer is not None:
            event = {"type": MESSAGE_TYPE, "m": message, "i": message_id, "o": PROCESS_ID}
            try:
                # channels-redis's pool comes from the project's CHANNEL_LAYERS, where redis-py's
                # Retry is rarely configured: the one reconnect a stale connection needs is done here.
                await reach("publish", self.name, lambda: layer.group_send(self.group, event), retry=True)
            except BrokerUnavailable:
                self.broker_errors += 1
                if message_id is not None:
                    self._memory_history.discard(message_id)
                raise
        shared = SharedMessage(message) if type(message) is dict else message
        if message_id is not None and type(shared) is SharedMessage:
            shared.id = message_id
        return self._fanout(shared, message_id), message_id

    async def _publish_to_stream(self, store: RedisHistory, message: Any) -> tuple[int, str]:
        """History in Redis: the Stream is the one source of order for every process.

        Delivery, local included, comes from each process's stream reader, so every subscriber
        everywhere sees the ids in the same increasing order (two processes publishing at once
        cannot interleave differently on different subscribers, which would break resuming).
        Returns the local subscribers that will receive it.
        """
        try:
            message_id = await reach("history", self.name, lambda: store.append(message))  # redis-py retries
        except BrokerUnavailable:
            self.broker_errors += 1
            raise
        return len(self._subscribers), message_id

    def publish_sync(self, message: Any) -> int:
        """``publish`` for synchronous code: management commands, WSGI views, worker threads."""
        loop = self._loop
        if loop is not None and loop.is_running() and not _in_loop(loop):
            return asyncio.run_coroutine_threadsafe(self.publish(message), loop).result()
        return async_to_sync(self.publish)(message)

    def subscribe(
        self, last_id: str | None = None, *, gaps: bool = False, with_ids: bool = False, maxlen: int | None = None
    ) -> Subscription:
        """An async iterator of messages, from now on (or replayed after ``last_id``)."""
        if last_id is not None and not self.history:
            raise ValueError(f"Channel {self.name!r} keeps no history: create it with history=N to resume")
        return Subscription(self, maxlen or self.maxlen, last_id=last_id, gaps=gaps, with_ids=with_ids)

    async def subscribe_queue(self) -> SubscriberQueue:
        """A raw bounded queue of messages; call ``unsubscribe_queue`` when done."""
        queue = SubscriberQueue(self.maxlen)
        self.attach(queue)
        return queue

    async def unsubscribe_queue(self, queue: asyncio.Queue) -> None:
        """Stop delivering to ``queue``."""
        self.detach(queue)

    @property
    def subscriber_count(self) -> int:
        """Active subscribers in this process."""
        return len(self._subscribers)

    # -- local fan-out ------------------------------------------------------------------------

    def _fanout(self, message: Any, message_id: str | None) -> int:
        delivered = 0
        for subscriber in list(self._subscribers):
            try:
                subscriber.offer(message, message_id)
                delivered += 1
            except Exception:
                logger.warning("Removing a subscriber of %r that could not take a message", self.name)
                self.detach(subscriber)
        self.messages += 1
        self.deliveries += delivered
        return delivered

    # -- the subscriber API: what delivery engines (relays, topics, revocation) attach ---------

    def attach(self, subscriber: Hashable) -> None:
        """Start calling ``subscriber.offer(message, message_id)`` for every message, in the publisher's turn.

        ``offer`` must not block or await; what it raises removes the subscriber (logged). The first
        subscriber of a process starts its one layer subscription (or stream reader).
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._bridge = None  # a bridge belongs to one loop
        self._subscribers[subscriber] = None
        adopt(self, subscriber)
        if self._bridge is None:
            store = self._redis()
            if store is not None:
                self._bridge = loop.create_task(self._run_stream_reader(store))
            elif self._layer() is not None:
                self._bridge = loop.create_task(self._run_bridge())

    def detach(self, subscriber: Hashable) -> None:
        """Stop offering to ``subscriber``; idempotent. The last one gone ends the layer subscription."""
        if self._subscribers.pop(subscriber, 0) is None:  # it was subscribed: keep what it dropped
            self.dropped_gone += getattr(subscriber, "dropped", 0)
        if not self._subscribers and self._bridge is not None:
            self._bridge.cancel()
            self._bridge = None

    # -- across processes ---------------------------------------------------------------------

    def _layer(self) -> Any:
        if self.group is None:
            return None
        from channels.layers import InMemoryChannelLayer, get_channel_layer

        layer = get_channel_layer(self.layer_alias)
        if layer is None or isinstance(layer, InMemoryChannelLayer):
            return None
        return layer

    async def _run_bridge(self) -> None:
        """This process's single layer subscription for this channel."""
        layer = self._layer()
        delay = 0.1
        while True:
            try:
                channel_name = await layer.new_channel(prefix="realtime.")
                await layer.group_add(self.group, channel_name)
                break
            except Exception as error:  # broker unreachable at start-up: keep trying
                broker_state.failed("subscribe", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        broker_state.recovered()
        try:
            while True:
                event = await layer.receive(channel_name)
                if not broker_state.up:
                    broker_state.recovered()
                if event.get("o") == PROCESS_ID:
                    continue
                if event.get("type") != MESSAGE_TYPE:
                    self.rejected += 1
                    continue
                message = event.get("m")
                shared = SharedMessage(message) if type(message) is dict else message
                if type(shared) is SharedMessage:
                    shared.id = event.get("i")
                self._fanout(shared, event.get("i"))
        finally:
            try:
                await asyncio.shield(layer.group_discard(self.group, channel_name))
            except Exception:  # noqa: S110 - the layer may be gone at shutdown; membership expires
                pass

    async def _run_stream_reader(self, store: RedisHistory) -> None:
        """This process's single reader of the channel's Redis Stream (history channels)."""
        last: str | None = None
        delay = 0.1
        while True:
            try:
                if last is None:
                    last = await store.last_id()
                for entry_id, message in await store.read_after(last, block_ms=5000):
                    last = entry_id
                    shared = SharedMessage(message) if type(message) is dict else message
                    if type(shared) is SharedMessage:
                        shared.id = entry_id
                    self._fanout(shared, entry_id)
                if not broker_state.up:
                    broker_state.recovered()
                delay = 0.1
            except Exception as error:  # Redis away: keep the position and retry with backoff
                broker_state.failed("history", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- history ------------------------------------------------------------------------------

    def _redis(self) -> RedisHistory | None:
        url = redis_url()
        if not self.history or url is None:
            return None
        loop = asyncio.get_running_loop()
        store = self._redis_history.get(loop)
        if store is None:
            store = self._redis_history[loop] = RedisHistory(url, self.name, self.history)
        return store

    def is_attached(self, subscriber: Hashable) -> bool:
        """True while ``subscriber`` is offered this channel's messages."""
        return subscriber in self._subscribers

    @property
    def subscribers(self) -> tuple[Any, ...]:
        """A snapshot of this process's subscribers, oldest first."""
        return tuple(self._subscribers)

    @property
    def reaches_other_processes(self) -> bool:
        """True when a publish here reaches subscribers in other processes (a layer, or a Redis Stream)."""
        return self._layer() is not None or bool(self.history and redis_url())

    async def replay_after(self, last_id: str) -> tuple[deque[tuple[str, Any]], bool]:
        """The history after ``last_id`` as ``(id, message)`` pairs, and whether it reached back that far."""
        store = self._redis()
        if store is not None:
            replay, recovered = await store.after(last_id)
        else:
            replay, recovered = self._memory_history.after(last_id)
        return deque(
            (i, SharedMessage(m) if type(m) is dict else m) for i, m in replay
        ), recovered

    async def newest_id(self) -> str | None:
        """The newest history id, or None (no history, or nothing published yet)."""
        if not self.history:
            return None
        store = self._redis()
        if store is not None:
            newest = await store.last_id()
            return None if newest == "0-0" else newest
        last = self._memory_history.last
        return str(last) if last else None

    def __repr__(self) -> str:
        return f"<Channel {self.name!r} subscribers={self.subscriber_count}>"


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False

