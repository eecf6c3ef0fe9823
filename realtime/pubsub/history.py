"""Message history for Channels, so a client that reconnects with its last id misses nothing.

- :class:`MemoryHistory`: one process; ids are ``"<epoch>-1"``, ``"<epoch>-2"``, ... per channel,
  ``epoch`` being when the history began (:mod:`realtime.pubsub.ids`): a restarted process's
  history has another epoch, so nobody resumes into it as if it were the old one.
- :class:`RedisHistory`: a Redis Stream per channel (``XADD ... MAXLEN ~ N``), so every process
  hands out ids from one sequence. Ids are Redis stream ids (``"1732550000000-0"``).

Both read ids with :func:`realtime.pubsub.ids.parse`. The Redis clients reconnect and retry a
command once when its pooled connection turns out to be broken (redis-py's ``Retry`` on
``ConnectionError`` only: a timed-out ``XADD`` may have been applied, so it is not repeated), and
every call is bounded by socket timeouts.

``after(last_id)`` returns what came after ``last_id`` and whether that is *everything* that
came after it (``recovered``). A malformed id, one this history never handed out (another epoch,
a Redis that restarted empty, an id from the future) or one older than what history still holds
is "not recovered": the client must refetch its state instead of trusting the replay, which is
then everything the history holds. ``"0"`` (:data:`~realtime.pubsub.ids.START`) asks for
everything, recovered when nothing was ever trimmed away. An id handed out before the master was
promoted (a failover, :mod:`realtime.pubsub.promotion`) is not recovered either: the old master's
last writes may never have reached the replica.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from . import ids, promotion
from .redis import async_client, channel_tag, is_cluster


class MemoryHistory:
    """The last ``size`` messages of a channel, in this process, under one epoch."""

    def __init__(self, size: int, epoch: int | None = None) -> None:
        self.entries: deque[tuple[int, Any]] = deque(maxlen=size)
        #: When this history began (``ids.new_epoch()``): the first part of each of its ids.
        self.epoch = ids.new_epoch() if epoch is None else epoch
        #: The number of the newest message (0: none yet).
        self.last = 0
        #: The newest number trimmed away (0: the history still holds everything since it began).
        self.trimmed = 0

    def append(self, message: Any) -> str:
        entries = self.entries
        if len(entries) == entries.maxlen:
            self.trimmed = entries[0][0]
        self.last += 1
        entries.append((self.last, message))
        return ids.make(self.epoch, self.last)

    def discard(self, message_id: str) -> None:
        """Forget an entry whose publish failed (nobody received it, so nobody may resume after it)."""
        parsed = ids.parse(message_id)
        if parsed is None or parsed[0] != self.epoch:
            return
        wanted = parsed[1]
        self.entries = deque((e for e in self.entries if e[0] != wanted), maxlen=self.entries.maxlen)

    def newest_id(self) -> str | None:
        """The id of the newest message, or None before the first."""
        return ids.make(self.epoch, self.last) if self.last else None

    def after(self, last_id: str) -> tuple[list[tuple[str, Any]], bool]:
        epoch = self.epoch
        parsed = ids.parse(last_id)
        if parsed == ids.START:
            parsed = (epoch, 0)
        if parsed is None or parsed[0] != epoch or parsed[1] > self.last:
            # Malformed, of another epoch (a restart), or invented: this history cannot vouch for it.
            return [(ids.make(epoch, i), m) for i, m in self.entries], False
        wanted = parsed[1]
        return [(ids.make(epoch, i), m) for i, m in self.entries if i > wanted], self.trimmed <= wanted


def key(name: str) -> str:
    """The stream of channel ``name``: ``realtime:history:{rt:<bucket>}:<name>`` (the channel's slot)."""
    return f"realtime:history:{channel_tag(name)}:{name}"


def decode(fields: dict[bytes, bytes]) -> Any:
    """The message of a stream entry."""
    return json.loads(fields[b"m"])


class RedisHistory:
    """A channel's history in a Redis Stream shared by every process."""

    def __init__(self, url: str, name: str, size: int, client: Any = None) -> None:
        #: Commands; blocking reads go through the process's one :class:`~realtime.pubsub.readers.StreamReaders`.
        self.client = client if client is not None else async_client(url)
        self.key = key(name)
        self.size = size
        #: The promotion fences' hash tag: this stream's on a cluster (one per master), none on one Redis.
        self.fence_tag = channel_tag(name) if is_cluster(url) else None

    async def append(self, message: Any) -> str:
        payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
        entry_id = await self.client.xadd(self.key, {"m": payload}, maxlen=self.size, approximate=False)
        return entry_id.decode()

    async def last_id(self) -> str:
        """The newest id in the stream ("0-0" when it is empty or absent)."""
        entries = await self.client.xrevrange(self.key, count=1)
        return entries[0][0].decode() if entries else ids.make(*ids.START)

    async def after(self, last_id: str) -> tuple[list[tuple[str, Any]], bool]:
        parsed = ids.parse(last_id)
        recovered = parsed is not None and await self._vouches_for(parsed)
        low = "-" if not recovered or parsed == ids.START else f"({ids.make(*parsed)}"
        entries = await self.client.xrange(self.key, min=low, max="+")
        return [(i.decode(), decode(fields)) for i, fields in entries], recovered

    async def _vouches_for(self, last_id: tuple[int, int]) -> bool:
        """Whether the stream holds every entry after ``last_id`` (needs Redis 7's ``XINFO STREAM`` fields)."""
        from redis.exceptions import ResponseError

        fence = await promotion.fence(self.client, self.fence_tag, self.key)
        if fence != ids.START and last_id <= fence:
            return False  # handed out before a failover: the old master's last writes may be lost
        try:
            info = await self.client.xinfo_stream(self.key)
        except ResponseError:  # no stream: nothing was published, or Redis lost it (a restart, a FLUSHDB)
            return last_id == ids.START  # from the start, nothing is everything; an id cannot be vouched for
        if last_id == ids.START:  # nothing ever trimmed or deleted
            added = info.get("entries-added")
            return added is not None and int(added) == int(info.get("length", -1))
        # A stream created after last_id was handed out (Redis restarted without persistence, or the
        # key was flushed) cannot vouch for what came between: its first entry is newer than last_id.
        # Trimming moves the first entry too (MAXLEN does not set max-deleted-entry-id; XDEL does).
        return (
            last_id <= _stream_id(info, "last-generated-id")
            and _stream_id(info, "max-deleted-entry-id") <= last_id
            and _stream_id(info, "recorded-first-entry-id") <= last_id
        )


def _stream_id(info: dict[Any, Any], field: str) -> tuple[int, int]:
    """A stream id field of ``XINFO STREAM`` (``(0, 0)`` when absent)."""
    return ids.parse(_text(info.get(field)) or "0") or ids.START


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
