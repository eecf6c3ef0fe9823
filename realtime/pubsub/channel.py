"""Channel: pub/sub that fans out in one process and, through the channel layer, across many.

The facade of the ``pubsub`` package. Fan-out to this process's subscribers is a loop of
``offer`` on bounded drop-oldest queues (:mod:`realtime.pubsub.delivery`): ``publish`` never waits
for a slow subscriber. How a publish reaches other processes is a :mod:`transport
<realtime.pubsub.transport>`, chosen at each call from the settings:

- no channel layer, or Channels' in-memory layer: this process only (``LocalTransport``);
- channels-redis (``REDIS_URL`` set): the layer's group API, **one** layer subscription per process
  and channel, whatever the subscribers (``LayerTransport``);
- history with ``REDIS_URL``: a Redis Stream, so every process agrees on ids (``StreamTransport``);
  with ``NATS_URL``: a JetStream stream instead (``JetStreamTransport``); :mod:`realtime.pubsub.brokers`
  is the one place that decides which.

An unnamed ``Channel()`` is always process-local (it has no name other processes could share).

History (``history=N``) keeps the last N messages with increasing ids. ``subscribe(last_id=...)``
replays what came after ``last_id`` then continues live, with no duplicate and no gap at the seam.

Inside ``transaction.atomic()`` a publish waits for the commit and is dropped on rollback
(:mod:`realtime.pubsub.commit`; ``REALTIME["PUBLISH_ON_COMMIT"]``, or ``on_commit=`` per call).

When Redis is unreachable, ``publish`` (and ``publish_sync``) raises ``BrokerUnavailable`` and the
message reaches **no** subscriber, not even this process's: a message is delivered everywhere or
nowhere, so a publisher can retry (or answer 503) without some users having seen it.

Subscribers (:meth:`Channel.attach`) are any object with ``offer(message, message_id)``, called in
the publisher's turn: a :class:`~realtime.pubsub.delivery.DeliveryQueue`, a
:class:`~realtime.pubsub.delivery.Listener`, or the specification's ``subscribe_queue()`` queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from asyncio import get_running_loop
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from asgiref.sync import async_to_sync, markcoroutinefunction

from ..encoding import SharedMessage, wire_safe
from ..ops.connections import adopt
from ..ops.stats import Slot, int_slots
from ..unawaited import decided, unawaited_publish
from .broker import BrokerUnavailable
from .brokers import history_broker, history_transport
from .commit import hold, transaction_to_wait_for
from .history import MemoryHistory
from .layer import PROCESS_ID, LayerTransport, cross_process_layer
from .subscription import Gap, SubscriberQueue, Subscription
from .transport import LocalTransport, Transport, until_positioned

logger = logging.getLogger("realtime.channel")

_GROUP_SAFE = re.compile(r"[^a-zA-Z0-9_.-]")

__all__ = [
    "PROCESS_ID", "BrokerUnavailable", "Channel", "Gap", "group_name", "occupancy_observers", "publish_observers",
    "registry",
]


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

#: Called after every publish made in this process that went out, whichever method made it
#: (``publish``, ``publish_with_id``, ``publish_sync``, ``Topic.publish``, a ``TopicSocket`` client's
#: publish), as ``observer(channel, message, delivered, message_id)``; ``realtime.testing.capture``
#: records publishes here. Empty outside tests: a publish then pays one truth test.
publish_observers: list[Callable[[Channel, Any, int, str | None], None]] = []

#: Called when a named channel gets its first subscriber in this process (``observer(name, True)``)
#: and when it loses its last (``observer(name, False)``): the lifecycle events (``realtime.events``)
#: learn a channel's occupancy here. Empty unless a lifecycle receiver is connected.
occupancy_observers: list[Callable[[str, bool], None]] = []


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
        self._listener: asyncio.Task[None] | None = None
        self._memory_history = MemoryHistory(history) if history else None
        self._local = LocalTransport(self, self._memory_history)
        self._layer_transport: LayerTransport | None = None
        #: History transports shared across processes, by event loop and broker (``brokers.history_broker()``).
        self._streams: dict[tuple[asyncio.AbstractEventLoop, tuple[str, str]], Transport] = {}
        self._ints = int_slots(6)
        #: Messages received from other processes that were not for this one (bad payloads).
        self.rejected = 0
        #: Publishes refused with BrokerUnavailable (Redis unreachable; nobody received them).
        self.broker_errors = 0
        #: For realtime.ops: publish calls here; messages fanned out here (any process's) and the
        #: subscribers they reached; messages dropped by subscribers that have gone.
        self.published = self.messages = self.deliveries = self.dropped_gone = 0
        #: Publishes held until a transaction commits, and those that failed after it (realtime.pubsub.commit).
        self.held = self.held_lost = 0
        if name is not None:
            registry.setdefault(name, self)

    @classmethod
    def named(cls, name: str) -> Channel:
        """The channel declared under ``name`` in this process, or a new one with that name."""
        return registry.get(name) or cls(name)

    # -- the specification's API --------------------------------------------------------------

    @markcoroutinefunction
    def publish(self, message: Any, *, on_commit: bool | None = None) -> Awaitable[int]:
        """Send ``message`` to every subscriber; returns how many subscribers *in this process* got it.

        Subscribers in other processes are reached through the layer but not counted (the layer
        does not report them). Messages are shared, not copied: subscribers must not mutate them.
        Raises :class:`BrokerUnavailable` when Redis cannot be reached: then nobody got it. A
        message that is not strict JSON in UTF-8 raises ``UnencodableMessage``: nobody gets it either.

        Awaited as an ``async def`` is. Called with no running event loop and never awaited (sync
        code that forgot :meth:`publish_sync`), it logs an error naming the call and the fix.

        Called from sync code inside ``transaction.atomic()`` (``async_to_sync(channel.publish)``), it
        is held until the commit and returns 0 (:mod:`realtime.pubsub.commit`); ``on_commit=False``
        publishes at once, ``True`` holds even with ``REALTIME["PUBLISH_ON_COMMIT"]`` off.
        """
        try:
            get_running_loop()
        except RuntimeError:  # sync code: the caller's thread, whose connection may be in a transaction
            alias = transaction_to_wait_for(on_commit)
            if alias is not None:
                hold(alias, self, message, self.publish_sync)
                return decided(0)
            return unawaited_publish(self._publish(message), self.name, "publish", message)
        return self._publish(message)

    async def _publish(self, message: Any) -> int:
        # _publish_with_id's body, inlined: one coroutine per publish, as before the entry check.
        sent = wire_safe(message)
        self.published += 1
        delivered, message_id = await self.transport().publish(sent)
        if publish_observers:
            self._observed(message, delivered, message_id)
        return delivered

    @markcoroutinefunction
    def publish_with_id(self, message: Any, *, on_commit: bool | None = None) -> Awaitable[tuple[int, str | None]]:
        """``publish``, also returning the message's history id (None without history, or held: ``(0, None)``)."""
        try:
            get_running_loop()
        except RuntimeError:
            alias = transaction_to_wait_for(on_commit)
            if alias is not None:
                hold(alias, self, message, self.publish_sync)
                return decided((0, None))
            return unawaited_publish(self._publish_with_id(message), self.name, "publish_with_id", message)
        return self._publish_with_id(message)

    async def _publish_with_id(self, message: Any) -> tuple[int, str | None]:
        sent = wire_safe(message)
        self.published += 1
        delivered, message_id = await self.transport().publish(sent)
        if publish_observers:
            self._observed(message, delivered, message_id)
        return delivered, message_id

    def _observed(self, message: Any, delivered: int, message_id: str | None) -> None:
        """Tell ``publish_observers`` of a publish that went out: the one place every publish passes."""
        for observer in list(publish_observers):
            observer(self, message, delivered, message_id)

    def publish_sync(self, message: Any, *, on_commit: bool | None = None) -> int:
        """``publish`` for synchronous code: management commands, WSGI views, worker threads.

        Inside ``transaction.atomic()`` it is held until the commit and returns 0 (see :meth:`publish`).
        """
        alias = transaction_to_wait_for(on_commit)
        if alias is not None:
            hold(alias, self, message, self.publish_sync)
            return 0
        loop = self._loop
        if loop is not None and loop.is_running() and not _in_loop(loop):
            return asyncio.run_coroutine_threadsafe(self.publish(message, on_commit=False), loop).result()
        return async_to_sync(self.publish)(message, on_commit=False)

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

    # -- the subscriber API: what delivery engines (relays, topics, revocation) attach ---------

    def attach(self, subscriber: Hashable) -> None:
        """Start calling ``subscriber.offer(message, message_id)`` for every message, in the publisher's turn.

        ``offer`` must not block or await; what it raises removes the subscriber (logged). The first
        subscriber of a process starts the transport's one listener (layer subscription or stream reader).
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._listener = None  # a listener belongs to one loop
        first = not self._subscribers
        self._subscribers[subscriber] = None
        if first and occupancy_observers and self.name is not None:
            self._tell_occupancy(True)
        adopt(self, subscriber)
        if self._listener is None:
            listen = self.transport().listen
            if listen is not None:
                self._listener = loop.create_task(listen())

    async def listening(self) -> None:
        """Wait until this process's listener receives whatever is published from now on (a stream
        reader has its position, the layer's group has this process), at most ``POSITION_TIMEOUT``.
        A subscriber told "subscribed" before that could miss a message published right after the
        answer: the reader would start after it, or another process's ``group_send`` would not
        include this one yet."""
        await until_positioned(self.transport())

    def detach(self, subscriber: Hashable) -> None:
        """Stop offering to ``subscriber``; idempotent. The last one gone ends the listener."""
        if self._subscribers.pop(subscriber, 0) is None:  # it was subscribed: keep what it dropped
            self.dropped_gone += getattr(subscriber, "dropped", 0)
            if not self._subscribers and occupancy_observers and self.name is not None:
                self._tell_occupancy(False)
        if not self._subscribers and self._listener is not None:
            self._listener.cancel()
            self._listener = None

    def _tell_occupancy(self, occupied: bool) -> None:
        for observer in list(occupancy_observers):
            try:
                observer(self.name, occupied)  # type: ignore[arg-type]  # named: checked by the caller
            except Exception:  # an observer's failure never refuses a subscriber
                logger.exception("An occupancy observer of %r failed", self.name)

    def is_attached(self, subscriber: Hashable) -> bool:
        """True while ``subscriber`` is offered this channel's messages."""
        return subscriber in self._subscribers

    @property
    def subscribers(self) -> tuple[Any, ...]:
        """A snapshot of this process's subscribers, oldest first."""
        return tuple(self._subscribers)

    def deliver(self, message: Any, message_id: str | None) -> int:
        """Offer one message to every local subscriber; what transports call. Returns the count reached."""
        if type(message) is SharedMessage:
            message.id = message_id
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

    # -- history --------------------------------------------------------------------------------

    async def replay_after(self, last_id: str) -> tuple[deque[tuple[str, Any]], bool]:
        """The history after ``last_id`` as ``(id, message)`` pairs, and whether it reached back that far."""
        replay, recovered = await self.transport().replay_after(last_id)
        return deque((i, SharedMessage(m) if type(m) is dict else m) for i, m in replay), recovered

    async def newest_id(self) -> str | None:
        """The newest history id, or None (no history, or nothing published yet)."""
        if not self.history:
            return None
        return await self.transport().newest_id()

    # -- across processes ---------------------------------------------------------------------

    def transport(self) -> Transport:
        """How this channel's messages travel now (settings are read at each call, as tests change them)."""
        if self.group is None:
            return self._local
        if self.history:
            broker = history_broker()  # NATS JetStream, a Redis Stream, or None: decided there only
            if broker is not None:
                key = (asyncio.get_running_loop(), broker)
                stream = self._streams.get(key)
                if stream is None:
                    stream = self._streams[key] = history_transport(self, broker)
                return stream
        layer = cross_process_layer(self.layer_alias)
        if layer is None:
            return self._local
        transport = self._layer_transport
        if transport is None or transport.layer is not layer:  # a new layer after a settings change
            transport = self._layer_transport = LayerTransport(self, self._memory_history, layer)
        return transport

    @property
    def reaches_other_processes(self) -> bool:
        """True when a publish here reaches subscribers in other processes (a layer, or shared history)."""
        if self.group is None:
            return False
        return cross_process_layer(self.layer_alias) is not None or bool(self.history and history_broker())

    def __repr__(self) -> str:
        return f"<Channel {self.name!r} subscribers={self.subscriber_count}>"


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
