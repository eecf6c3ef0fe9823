"""Every history stream of a process read by a bounded number of blocking ``XREAD`` connections.

A channel with history that has subscribers here registers its stream (:meth:`StreamReaders.watch`)
with the position it reads after; one task per *group* of streams runs ``XREAD BLOCK ... STREAMS
k1 k2 ... id1 id2 ...`` over all of them on one connection of its own, and hands each entry to its
channel. A new stream wakes the blocked read with ``CLIENT UNBLOCK`` (sent on the shared command
connection), so it is read at once instead of after the block.

- One Redis: one group, so **one** reader connection per process, whatever the channels.
- Redis Sentinel: the same, to the master the sentinels name when the connection opens. The
  master's death breaks the connection and fails the read. A master demoted alive (a switch-over,
  a partition healed) keeps its blocked reads, and as a replica it even keeps feeding them, but
  no longer reliably (its link to the new master may be down): so the reader asks its server's
  ``ROLE`` between reads, at most every :data:`ROLE_EVERY` seconds, and leaves a replica. Either
  way it reconnects, asking the sentinels again, and lands on the promoted replica with every
  stream's position kept.
- A Redis Cluster: a multi-key command must stay in one slot, so streams are grouped by their hash
  tag (:data:`realtime.pubsub.redis.TAG_BUCKETS`, 16 slots): at most 16 reader connections per
  process, each to the master that holds its slot now. A reader that fails (the master died, the
  slot moved) reconnects to the slot's current owner, keeping every stream's position, so no entry
  is skipped.

Plus the command client every channel's history shares (``XADD``, ``XRANGE``...): one pool per
process (per node on a cluster) instead of one per channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from . import promotion
from .broker import broker_state
from .history import decode
from .redis import READER_TIMEOUT, async_client, client_options, connection_client, is_cluster, is_sentinel

#: ``(entry id, message)`` to the channel that watches the stream.
Deliver = Callable[[str, Any], None]
BLOCK_MS = 5000
BATCH = 500
#: Seconds between two ``ROLE`` checks of a Sentinel reader's server (at most one per ``XREAD`` besides).
ROLE_EVERY = 2.0


class Demoted(Exception):
    """A Sentinel reader's server is a replica now: read from the master the sentinels name instead."""


class Watch:
    """One stream being read: where it is and whom it feeds."""

    __slots__ = ("deliver", "last")

    def __init__(self, last: str, deliver: Deliver) -> None:
        self.last = last
        self.deliver = deliver


class Group:
    """The streams one connection reads with one blocking ``XREAD``, and that reader's task."""

    def __init__(self, owner: StreamReaders, name: str) -> None:
        self.owner = owner
        self.name = name
        self.streams: dict[str, Watch] = {}
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.connection: Any = None
        self.client_id: int | None = None
        self.blocked = False
        self.waking: asyncio.Task[None] | None = None
        #: Whether the last read failed: the next connection may reach a promoted replica.
        self.failed = False
        #: When a Sentinel reader last made sure its server is still the master (``ROLE``).
        self.role_checked = 0.0

    def wake(self) -> None:
        """Make the reader restart its ``XREAD`` with the current streams (one ``CLIENT UNBLOCK`` in
        flight at most: a thousand channels subscribing at once cost one reread, not a thousand)."""
        self.changed.set()
        if self.blocked and self.client_id is not None and (self.waking is None or self.waking.done()):
            self.waking = asyncio.get_running_loop().create_task(self.owner.unblock(self))

    async def run(self) -> None:
        delay = 0.1
        try:
            while self.streams:
                try:
                    await self._read_once()
                    delay = 0.1
                except asyncio.CancelledError:
                    raise
                except Demoted:  # not an outage: the master is elsewhere, and the sentinels say where
                    await self._drop_connection()
                    self.failed = True
                except Exception as error:  # the node is away, or no longer owns the slot: reconnect
                    broker_state.failed("history", error)
                    await self._drop_connection()
                    self.owner.stale = self.failed = True
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            await self._drop_connection()
            if self.owner.groups.get(self.name) is self:
                del self.owner.groups[self.name]

    async def _read_once(self) -> None:
        if self.connection is None:
            self.connection = await self.owner.connect(self.name, next(iter(self.streams)))
            self.client_id = await self.connection.client_id()
            self.role_checked = time.monotonic()  # just found through the sentinels
            if self.failed:  # after a failover: fence the promoted master's history now, not at the first resume
                self.failed = False
                await self.owner.fence(self.name, next(iter(self.streams)))
        if self.owner.sentinel and time.monotonic() >= self.role_checked + ROLE_EVERY:
            self.role_checked = time.monotonic()
            role = await self.connection.execute_command("ROLE")
            if role[0] not in (b"master", "master"):
                raise Demoted
        self.changed.clear()
        positions = {key: watch.last for key, watch in self.streams.items()}
        self.blocked = True
        try:
            response = await self.connection.xread(positions, block=BLOCK_MS, count=BATCH)
        finally:
            self.blocked = False
        if not broker_state.up:
            broker_state.recovered()
        for key, entries in response or ():
            watch = self.streams.get(key.decode() if isinstance(key, bytes) else key)
            if watch is None:
                continue
            for entry_id, fields in entries:
                watch.last = entry_id.decode()
                watch.deliver(watch.last, decode(fields))

    async def _drop_connection(self) -> None:
        connection, self.connection, self.client_id = self.connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.aclose()


class StreamReaders:
    """This event loop's history readers and shared command client, for one ``REDIS_URL``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cluster = is_cluster(url)
        self.sentinel = is_sentinel(url)
        self.client = async_client(url)
        self.groups: dict[str, Group] = {}
        #: Whether a reader failed since the slot map was last read (a cluster's master may have moved).
        self.stale = False

    def group_of(self, key: str) -> str:
        """One group on one Redis; on a cluster, the stream's hash tag (one slot per group)."""
        if not self.cluster:
            return ""
        start = key.index("{")
        return key[start:key.index("}", start) + 1]

    def watch(self, key: str, last: str, deliver: Deliver) -> Watch:
        """Read ``key`` after ``last`` from now on, handing entries to ``deliver``."""
        group = self.groups.get(self.group_of(key))
        if group is None or group.task is None or group.task.done():
            group = self.groups[self.group_of(key)] = Group(self, self.group_of(key))
        watch = group.streams[key] = Watch(last, deliver)
        if group.task is None:
            group.task = asyncio.get_running_loop().create_task(group.run())
        else:
            group.wake()
        return watch

    def unwatch(self, key: str, watch: Watch) -> None:
        group = self.groups.get(self.group_of(key))
        if group is None or group.streams.get(key) is not watch:
            return
        del group.streams[key]
        if group.streams:
            group.wake()
            return
        # Forget the group now, not when its cancelled task has ended: a stream watched before that
        # would join a reader on its way out and never be read (a channel's last subscriber leaving
        # and the next channel's first arriving in the same moment: the next test, the next page).
        del self.groups[self.group_of(key)]
        if group.task is not None:
            group.task.cancel()

    async def connect(self, group: str, key: str) -> Any:
        """A connection of the group's own, to the server (or the slot's current master) of ``key``."""
        from redis import asyncio as aioredis

        if not self.cluster:  # one server, or the master the sentinels name now
            return connection_client(self.url, READER_TIMEOUT)
        await self.client.initialize()  # the first time: the slot map
        if self.stale:  # a reader failed: the slot's master may be another node now (a failover, a move)
            self.stale = False
            await self.client.nodes_manager.initialize()
        node = self.client.get_node_from_key(key)
        return aioredis.Redis(host=node.host, port=node.port, single_connection_client=True,
                              **client_options(READER_TIMEOUT))

    async def fence(self, group: str, key: str) -> None:
        """Record the promotion moment of the master ``key`` is on (:mod:`realtime.pubsub.promotion`)."""
        try:
            await promotion.fence(self.client, group or None, key)
        except Exception:  # noqa: S110 - the first resume records it then
            pass

    async def unblock(self, group: Group) -> None:
        """``CLIENT UNBLOCK`` the group's reader (on its node), so it rereads its stream list now."""
        client_id = group.client_id
        if client_id is None:
            return
        try:
            if self.cluster:
                node = self.client.get_node_from_key(next(iter(group.streams), group.name) or group.name)
                await self.client.execute_command("CLIENT UNBLOCK", client_id, target_nodes=node)
            else:
                await self.client.client_unblock(client_id)
        except Exception:  # noqa: S110 - the read ends by itself after BLOCK_MS
            pass

    def connections(self) -> int:
        """Reader connections open now (figures for the docs and tests)."""
        return sum(1 for group in self.groups.values() if group.connection is not None)


_readers: dict[tuple[asyncio.AbstractEventLoop, str], StreamReaders] = {}


def stream_readers(url: str) -> StreamReaders:
    """The running loop's :class:`StreamReaders` for ``url``."""
    loop = asyncio.get_running_loop()
    readers = _readers.get((loop, url))
    if readers is None:
        for old in [old for old in _readers if old[0].is_closed()]:
            del _readers[old]
        readers = _readers[(loop, url)] = StreamReaders(url)
    return readers

