"""How a Channel's messages travel: one protocol, one module per way (Action Cable's adapters).

A :class:`Transport` takes a Channel's publishes and brings them, with their history ids, to
:meth:`Channel.deliver` in every process that has subscribers. ``listen`` runs while this process
has at least one subscriber (the one layer subscription, or stream reader, per process and
channel); the history questions (``replay_after``, ``newest_id``) are asked of the transport that
hands out the ids.

- :class:`LocalTransport` (here): this process only; history in memory.
- :class:`realtime.pubsub.layer.LayerTransport`: the channel-layer group API across processes.
- :class:`realtime.pubsub.streams.StreamTransport`: a Redis Stream, for history every process shares.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .history import MemoryHistory

#: A replay: ``(id, message)`` pairs after the asked id, and whether they are everything after it.
Replay = tuple[list[tuple[str, Any]], bool]


class Fanout(Protocol):
    """What a transport needs of its Channel: its identity, its counters, and its local fan-out."""

    name: str | None
    group: str | None
    history: int
    rejected: int
    broker_errors: int

    @property
    def subscriber_count(self) -> int: ...

    def deliver(self, message: Any, message_id: str | None) -> int: ...


class Transport(Protocol):
    """The part of a Channel that moves messages; ``publish`` returns the local deliveries and the id."""

    async def publish(self, message: Any) -> tuple[int, str | None]: ...

    #: A coroutine to run while the process has subscribers, or None when nothing comes from elsewhere.
    listen: Callable[[], Awaitable[None]] | None

    #: Done once the running listener hears everything published from then on (a stream reader's first
    #: position, a layer's group membership); None when publishes reach local subscribers without one.
    positioned: asyncio.Future[None] | None

    async def replay_after(self, last_id: str) -> Replay: ...

    async def newest_id(self) -> str | None: ...


#: How long a subscriber waits for its listener's position at most (a broker that is away is not waited for).
POSITION_TIMEOUT = 5.0


async def until_positioned(transport: Transport) -> None:
    """Wait until ``transport``'s running listener hears whatever is published from now on (its
    ``positioned``), at most :data:`POSITION_TIMEOUT`; at once when it has no such moment."""
    positioned = transport.positioned
    if positioned is not None and not positioned.done():
        await asyncio.wait((positioned,), timeout=POSITION_TIMEOUT)


class LocalTransport:
    """This process only: a publish is the local fan-out; history, if any, is in memory."""

    listen = None
    positioned = None

    def __init__(self, channel: Fanout, history: MemoryHistory | None) -> None:
        self.channel = channel
        self.history = history

    async def publish(self, message: Any) -> tuple[int, str | None]:
        message_id = self.history.append(message) if self.history is not None else None
        return self.channel.deliver(message, message_id), message_id

    async def replay_after(self, last_id: str) -> Replay:
        if self.history is None:
            return [], False
        return self.history.after(last_id)

    async def newest_id(self) -> str | None:
        return self.history.newest_id() if self.history is not None else None
