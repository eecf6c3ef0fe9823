"""NATS as the broker: where it is (``settings.NATS_URL``), the one client per process, and a Channels layer.

``NATS_URL = "nats://127.0.0.1:4222"`` (several servers: ``nats://a:4222,nats://b:4222``) with
``CHANNEL_LAYERS = {"default": {"BACKEND": "realtime.pubsub.nats.NatsChannelLayer",
"CONFIG": {"hosts": [NATS_URL]}}}`` (the hosts default to ``NATS_URL``). The layer implements the
channel-layer API (``new_channel``, ``send``, ``receive``, ``group_add``, ``group_discard``,
``group_send``, ``flush``), so plain Channels consumers use it as they use channels-redis; history
channels keep their history in JetStream (:mod:`realtime.pubsub.jetstream`) on the same connection.

- A group is the core subject ``<prefix>.g.<group>``; a process subscribes to it once, on its first
  local member, whatever the number of members, and unsubscribes with its last.
- Channels are process-local (``new_channel`` names carry this process's id after ``!``); a
  ``send`` to another process's channel goes to that process's inbox subject ``<prefix>.p.<process>``.
  Channels without ``!`` (``runworker`` consumers) are not supported: they need a queue in the broker.
- A publish is confirmed: ``PUB`` then a ``PING`` answered by the server (:func:`round_trip`), so a publish
  that returns has reached the server, and one that raises may not have. While the connection is
  down nothing is buffered (``pending_size=0``): a publish then raises at once instead of going out
  minutes later, after its caller was told it failed.
- Delivery is at most once, as on every core NATS subject: a message published while a process is
  reconnecting is lost for it. The client reconnects by itself, forever, and resubscribes every
  subject; what the layer could not deliver (a local queue full, an unreadable message) is counted
  (:attr:`NatsChannelLayer.undelivered`) and logged on the ``realtime.layer`` logger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any

from .broker import broker_state
from .local_layer import ProcessLocalLayer

logger = logging.getLogger("realtime.layer")

#: Seconds a connection attempt, a flush or a JetStream request may take before NATS counts as unreachable.
COMMAND_TIMEOUT = 5.0
SCHEMES = ("nats", "tls", "ws", "wss")


def nats_url() -> str | None:
    """``settings.NATS_URL``, or None when the broker is not NATS."""
    from django.conf import settings

    return getattr(settings, "NATS_URL", None) or None


def servers(url: str) -> list[str]:
    """The server URLs of ``nats://a:4222,nats://b:4222`` (a bare ``host:port`` after the first is allowed)."""
    scheme = url.split("://", 1)[0] if "://" in url else "nats"
    return [part if "://" in part else f"{scheme}://{part}" for part in (p.strip() for p in url.split(",")) if part]


class NatsUnreachable(ConnectionError):
    """NATS could not take a command now (disconnected, reconnecting, timed out): it reached nobody."""


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` (of nats-py) says the server cannot be reached, rather than that a request is bad."""
    import nats.errors as e
    from nats.js import errors as js

    return isinstance(error, (OSError, asyncio.TimeoutError, e.ConnectionClosedError, e.OutboundBufferLimitError,
                              e.NoServersError, e.StaleConnectionError, e.NoRespondersError, e.TimeoutError,
                              e.ConnectionReconnectingError, js.ServiceUnavailableError))


_clients: dict[tuple[asyncio.AbstractEventLoop, str], Any] = {}
_connecting: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Lock] = {}


async def client(url: str | None = None) -> Any:
    """The running loop's connection to ``url`` (default ``NATS_URL``): one per process, shared by the layer
    and every history channel, reconnecting by itself. Raises :class:`NatsUnreachable` when it cannot connect."""
    import nats

    url = url or nats_url()
    if url is None:
        raise ValueError("NATS_URL is not set")
    loop = asyncio.get_running_loop()
    key = (loop, url)
    found = _clients.get(key)
    if found is not None and not found.is_closed:
        return found
    lock = _connecting.setdefault(key, asyncio.Lock())
    async with lock:
        found = _clients.get(key)
        if found is not None and not found.is_closed:
            return found
        for old in [old for old in _clients if old[0].is_closed()]:
            _clients.pop(old, None)
            _connecting.pop(old, None)

        made: list[Any] = []  # the connection, once made: a disconnection by close() is no failure

        async def error_cb(error: BaseException) -> None:
            if not (made and made[0].is_closed):
                broker_state.failed("connection", error, "NATS")

        async def disconnected_cb() -> None:
            if not (made and made[0].is_closed):
                broker_state.failed("connection", NatsUnreachable(f"disconnected from {url}"), "NATS")

        async def reconnected_cb() -> None:
            broker_state.recovered()

        try:
            connection = await nats.connect(
                servers(url), connect_timeout=COMMAND_TIMEOUT, allow_reconnect=True, max_reconnect_attempts=-1,
                reconnect_time_wait=0.25, pending_size=0, ping_interval=5, max_outstanding_pings=2,
                error_cb=error_cb, disconnected_cb=disconnected_cb, reconnected_cb=reconnected_cb,
            )
        except Exception as error:
            if not unreachable(error):
                raise
            raise NatsUnreachable(f"cannot connect to {url}: {error or type(error).__name__}") from error
        made.append(connection)
        _clients[key] = connection
        return connection


async def close_clients() -> None:
    """Close this loop's connections (tests; a server shutting down)."""
    loop = asyncio.get_running_loop()
    for key in [key for key in _clients if key[0] is loop]:
        connection = _clients.pop(key)
        with contextlib.suppress(Exception):
            await connection.close()


async def round_trip(connection: Any, timeout: float = COMMAND_TIMEOUT) -> None:
    """Return once the server has read every command ``connection`` was given before this call.

    ``flush()`` alone does not promise that on nats-py 2.16: its ``PING`` is written straight to the
    socket, while ``SUB`` and ``PUB`` wait in the client's pending buffer for its flusher task, so the
    ``PONG`` can answer a ``PING`` that overtook them (a group_add "done" before the server knew the
    subscription; a publish "confirmed" before the server had it). The pending buffer is handed to the
    socket first, by the flusher's own forced path, then the ``PING`` goes out behind it.
    ``tests/test_nats_client_contract.py`` fails when nats-py changes either half of that.
    """
    await asyncio.wait_for(connection._flush_pending(force_flush=True), timeout)
    await connection.flush(timeout=timeout)


async def confirmed_publish(connection: Any, subject: str, data: bytes) -> None:
    """``PUB`` then a round trip (``flush``): returns once the server has the message; else NatsUnreachable."""
    if not connection.is_connected:  # reconnecting: refuse now, nothing is buffered for later
        raise NatsUnreachable(f"not connected to NATS (publish to {subject!r})")
    try:
        await connection.publish(subject, data)
        await round_trip(connection)
    except Exception as error:
        if not unreachable(error):
            raise
        raise NatsUnreachable(f"publish to {subject!r} not confirmed: {error or type(error).__name__}") from error


#: Every live layer of this process, for the ops snapshot; weak, so none is kept alive.
layers: weakref.WeakSet[NatsChannelLayer] = weakref.WeakSet()


class NatsChannelLayer(ProcessLocalLayer):
    """Groups on core NATS subjects, one subscription per group per process; channels in this process."""
    #: What realtime.pubsub.broker names in its log lines and in BrokerUnavailable.
    broker_name = "NATS"

    def __init__(self, hosts: list[str] | None = None, prefix: str = "asgi", capacity: int = 100,
                 expiry: int = 60, group_expiry: int = 86400, channel_capacity: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(prefix=prefix, capacity=capacity, expiry=expiry, channel_capacity=channel_capacity)
        self.url = ",".join(hosts) if hosts else None
        self._subscriptions: dict[str, Any] = {}  # group -> nats-py subscription
        self._inbox: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        layers.add(self)

    # -- names ------------------------------------------------------------------------------------

    def group_address(self, group: str) -> str:
        """``<prefix>.g.<group>``; a ``.`` of the group name becomes ``~`` (never in a group name), so a
        group is one subject token and ``a.b`` is not a sub-subject of ``a``."""
        return f"{self.prefix}.g.{group.replace('.', '~')}"

    def process_address(self, process: str) -> str:
        return f"{self.prefix}.p.{process}"

    # -- the connection and the subscriptions ----------------------------------------------------------

    async def connect(self) -> Any:
        """The process's NATS connection and this layer's inbox subscription, for the running loop."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests; a reloaded server): subscriptions start over
            self._loop, self._inbox, self._subscriptions = loop, None, {}
            self._lock = asyncio.Lock()
        connection = await client(self.url)
        if self._inbox is None:
            assert self._lock is not None
            async with self._lock:
                if self._inbox is None:
                    self._inbox = await connection.subscribe(self.process_address(self.process), cb=self._on_message)
                    for group in self.groups:  # members added on another loop
                        if group not in self._subscriptions:
                            self._subscriptions[group] = await connection.subscribe(
                                self.group_address(group), cb=self._on_message)
        return connection

    async def _on_message(self, msg: Any) -> None:
        if not broker_state.up:
            broker_state.recovered()
        self.fan_in(msg.data)

    # -- the channel layer API ------------------------------------------------------------------------

    async def publish_payload(self, address: str, data: bytes) -> None:
        await confirmed_publish(await client(self.url), address, data)  # connect() ran in send or group_send

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        connection = await self.connect()
        members = self.groups[group]
        members.add(channel)
        if group in self._subscriptions:
            return
        assert self._lock is not None
        try:
            async with self._lock:
                if group not in self._subscriptions and self.groups.get(group):
                    self._subscriptions[group] = await connection.subscribe(self.group_address(group),
                                                                            cb=self._on_message)
                    # the server has read the SUB once this returns: a publish after group_add is heard
                    await round_trip(connection)
        except Exception as error:
            members.discard(channel)
            if not members:
                self.groups.pop(group, None)
                await self._unsubscribe(group)
            if unreachable(error):
                raise NatsUnreachable(f"cannot subscribe to {group!r}: {error or type(error).__name__}") from error
            raise

    async def left(self, group: str) -> None:
        await self._unsubscribe(group)

    async def _unsubscribe(self, group: str) -> None:
        subscription = self._subscriptions.pop(group, None)
        if subscription is not None and self._loop is asyncio.get_running_loop():
            with contextlib.suppress(Exception):  # reconnecting: the server forgets it with the connection
                await subscription.unsubscribe()

    async def close(self) -> None:
        """Drop this layer's subscriptions; not the shared connection, which history channels use too
        (:func:`close_clients` closes it)."""
        subscriptions = [*self._subscriptions.values(), self._inbox]
        self._subscriptions, self._inbox = {}, None
        if self._loop is asyncio.get_running_loop():
            for subscription in subscriptions:
                if subscription is not None:
                    with contextlib.suppress(Exception):
                        await subscription.unsubscribe()

    def subscriptions(self) -> int:
        """Subjects this layer is subscribed to (its inbox and one per group)."""
        return len(self._subscriptions) + (1 if self._inbox is not None else 0)


def figures() -> dict[str, Any]:
    """The ops snapshot's ``broker.layer`` for NATS layers: what they could not deliver, and their groups."""
    alive = list(layers)
    return {"undelivered": sum(layer.undelivered for layer in alive),
            "groups": sum(len(layer.groups) for layer in alive)}
