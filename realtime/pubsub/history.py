"""Message history for Channels, so a client that reconnects with its last id misses nothing.

- :class:`MemoryHistory`: one process; ids are ``"1"``, ``"2"``, ... per channel.
- :class:`RedisHistory`: a Redis Stream per channel (``XADD ... MAXLEN ~ N``), so every process
  hands out ids from one sequence. Ids are Redis stream ids (``"1732550000000-0"``).

The Redis clients reconnect and retry a command once when its pooled connection turns out to be
broken (redis-py's ``Retry`` on ``ConnectionError`` only: a timed-out ``XADD`` may have been applied,
so it is not repeated), and every call is bounded by socket timeouts.

``after(last_id)`` returns what came after ``last_id`` and whether that is *everything* that
came after it (``recovered``). A malformed or too-old id is "not recovered": the client must
refetch its state instead of trusting the replay.
"""

from __future__ import annotations

import json
import re
from collections import deque
from typing import Any

from .redis import READER_TIMEOUT, client_options

_STREAM_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")


class MemoryHistory:
    """The last ``size`` messages of a channel, in this process."""

    def __init__(self, size: int) -> None:
        self.entries: deque[tuple[int, Any]] = deque(maxlen=size)
        self.last = 0

    def append(self, message: Any) -> str:
        self.last += 1
        self.entries.append((self.last, message))
        return str(self.last)

    def discard(self, message_id: str) -> None:
        """Forget an entry whose publish failed (nobody received it, so nobody may resume after it)."""
        wanted = int(message_id)
        self.entries = deque((e for e in self.entries if e[0] != wanted), maxlen=self.entries.maxlen)

    def after(self, last_id: str) -> tuple[list[tuple[str, Any]], bool]:
        if not last_id.isdigit() or len(last_id) > 20:
            return [(str(i), m) for i, m in self.entries], False
        wanted = int(last_id)
        if wanted > self.last:  # an id from before a restart, or invented: cannot vouch for it
            return [(str(i), m) for i, m in self.entries], False
        oldest = self.entries[0][0] if self.entries else self.last + 1
        recovered = wanted + 1 >= oldest
        return [(str(i), m) for i, m in self.entries if i > wanted], recovered


_ORDERED_ID = re.compile(r"^\d{1,20}(?:-\d{1,20})?$")


def id_order(message_id: str | None) -> tuple[int, ...] | None:
    """A history id as a key that sorts as the history does, or None for an id no history hands out.

    Memory ids (``"7"``, or ``"<epoch>-<n>"``) and Redis stream ids (``"<ms>-<seq>"``) alike; compare
    only ids of one channel's history (one epoch), as only those share a sequence.
    """
    if type(message_id) is not str or not _ORDERED_ID.match(message_id):
        return None
    return tuple(int(part) for part in message_id.split("-"))


def _parse_stream_id(value: str) -> tuple[int, int] | None:
    match = _STREAM_ID.match(value)
    return (int(match[1]), int(match[2])) if match else None


class RedisHistory:
    """A channel's history in a Redis Stream shared by every process."""

    def __init__(self, url: str, name: str, size: int) -> None:
        from redis import asyncio as aioredis

        self.client = aioredis.Redis.from_url(url, **client_options())
        # Blocking reads get their own connection, so they never delay a publish.
        self.reader = aioredis.Redis.from_url(url, **client_options(READER_TIMEOUT))
        self.key = f"realtime:history:{name}"
        self.size = size

    async def append(self, message: Any) -> str:
        payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
        entry_id = await self.client.xadd(self.key, {"m": payload}, maxlen=self.size, approximate=False)
        return entry_id.decode()

    async def last_id(self) -> str:
        """The newest id in the stream ("0-0" when it is empty or absent)."""
        entries = await self.client.xrevrange(self.key, count=1)
        return entries[0][0].decode() if entries else "0-0"

    async def read_after(self, last_id: str, block_ms: int) -> list[tuple[str, Any]]:
        """Entries after ``last_id``, waiting up to ``block_ms`` (under ``READER_TIMEOUT``) for the next one."""
        response = await self.reader.xread({self.key: last_id}, block=block_ms, count=500)
        return [
            (entry_id.decode(), json.loads(fields[b"m"]))
            for _, entries in response or ()
            for entry_id, fields in entries
        ]

    async def after(self, last_id: str) -> tuple[list[tuple[str, Any]], bool]:
        parsed = _parse_stream_id(last_id)
        entries = await self.client.xrange(self.key, min=f"({last_id}" if parsed else "-", max="+")
        replay = [(i.decode(), json.loads(fields[b"m"])) for i, fields in entries]
        if parsed is None:
            return replay, False
        try:
            info = await self.client.xinfo_stream(self.key)
        except Exception:  # the client holds an id, so the stream existed: Redis lost it
            return replay, False
        last_generated = _parse_stream_id(_text(info.get("last-generated-id")) or "0-0") or (0, 0)
        trimmed = _parse_stream_id(_text(info.get("max-deleted-entry-id")) or "0-0") or (0, 0)
        # A stream created after last_id was handed out (Redis restarted without persistence)
        # cannot vouch for what came between: its first ever entry is newer than last_id.
        first = _parse_stream_id(_text(info.get("recorded-first-entry-id")) or "0-0") or (0, 0)
        recovered = parsed <= last_generated and trimmed <= parsed and first <= parsed
        return replay, recovered


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
