"""Lifecycle events across processes: a Redis Stream read by one consumer group, so each entry is
handled by one process.

Every process appends the changes it decides (in Lua scripts, so that two processes never both
announce one change) to the stream ``realtime:lifecycle:events`` and reads it as a consumer (its
``PROCESS_ID``) of the group ``realtime-lifecycle``: ``XREADGROUP`` gives each entry to one consumer,
which runs the receivers in a task of its own and ``XACK``s the entry when they have run. A consumer
that dies leaves its entries pending; another process takes them with ``XAUTOCLAIM`` once they have
been idle ``REALTIME["LIFECYCLE_CLAIM_AFTER"]`` seconds (a live consumer keeps its running entries
fresh with ``XCLAIM ... JUSTID``, so a slow receiver is not run twice).

Every key carries one hash tag (:data:`TAG`, presence's tag of the lifecycle names), so on a Redis
Cluster (``redis+cluster://``) each script's keys, the stream included, are in one slot.

The grace window is a sorted set per kind (key → deadline, Redis' clock): a key gone is put there;
every process flushes what is due, and a key announced offline/vacated only when presence's count of
it is still zero then. A key that comes back before its deadline is taken out and announces nothing.

Receivers that raise are logged and their entry is acknowledged all the same: no retry, as a retry
would run again the receivers that succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from ..conf import setting
from ..pubsub.channel import PROCESS_ID
from ..pubsub.redis import READER_TIMEOUT, async_client, channel_tag
from ..topics.presence import counts_key
from .signals import KINDS, PRESENCE_NAMES, dispatch, event_name

logger = logging.getLogger("realtime.events")


def _one_tag() -> str:
    """The hash tag of every lifecycle key: the flush script reads presence's counts of a kind's keys
    (tagged by their presence name) beside the stream, so both names must share one tag."""
    tags = {channel_tag(name) for name in PRESENCE_NAMES.values()}
    if len(tags) != 1:  # a renamed presence name: pick names whose tags agree
        raise RuntimeError(f"The lifecycle presence names {sorted(PRESENCE_NAMES.values())} have tags {tags}")
    return tags.pop()


#: ``{rt:<n>}``: every key below, and presence's counts of users and channels, are in its slot.
TAG = _one_tag()
STREAM = f"realtime:lifecycle:{TAG}:events"
GROUP = "realtime-lifecycle"
#: Entries the stream keeps (approximately): a consumer group away longer than that loses the oldest.
MAXLEN = 100_000
#: Entries read, and receivers running, at once in one process.
BATCH = 100
#: How long a read waits for new entries, in milliseconds (the flush and claim run between reads).
BLOCK_MS = 500


def pending_key(kind: str) -> str:
    return f"realtime:lifecycle:{TAG}:pending:{kind}"


def announced_key(kind: str) -> str:
    return f"realtime:lifecycle:{TAG}:announced:{kind}"


# KEYS: pending, announced, stream. ARGV: key, event, maxlen. Back within the window: nothing;
# already announced (another process's connection): nothing; else one entry.
_APPEARED = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then return false end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return false end
local t = redis.call('TIME')
local at = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
return redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[2], 'key', ARGV[1], 'at', at)
"""

# KEYS: pending. ARGV: key, grace seconds.
_VANISHED = """
local t = redis.call('TIME')
local deadline = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], string.format('%.6f', deadline), ARGV[1])
"""

# KEYS: pending, announced, presence counts, stream. ARGV: event, maxlen, limit.
_FLUSH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now), 'LIMIT', 0, tonumber(ARGV[3]))
local sent = 0
for _, key in ipairs(due) do
  redis.call('ZREM', KEYS[1], key)
  local count = tonumber(redis.call('HGET', KEYS[3], key) or '0')
  if count <= 0 and redis.call('SREM', KEYS[2], key) == 1 then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[1], 'key', key,
               'at', string.format('%.6f', now))
    sent = sent + 1
  end
end
return sent
"""


class RedisEvents:
    """The shared backend, for one event loop: the scripts, and the task that flushes, claims and consumes."""

    def __init__(self, url: str) -> None:
        # The shared factory: one server or a cluster, as REDIS_URL says. Its replies are bytes.
        self.client = async_client(url)
        self.reader = async_client(url, READER_TIMEOUT)
        self._appeared = self.client.register_script(_APPEARED)
        self._vanished = self.client.register_script(_VANISHED)
        self._flush = self.client.register_script(_FLUSH)
        self.running: dict[str, asyncio.Task[None]] = {}  # entry id → its receivers' task
        self.slots = asyncio.Semaphore(BATCH)
        self.service: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.service is None or self.service.done():
            self.service = asyncio.get_running_loop().create_task(self._serve())

    async def appeared(self, kind: str, key: Any) -> None:
        keys = [pending_key(kind), announced_key(kind), STREAM]
        await self._appeared(keys=keys, args=[json.dumps(key), event_name(kind, True), MAXLEN])

    async def vanished(self, kind: str, key: Any) -> None:
        await self._vanished(keys=[pending_key(kind)], args=[json.dumps(key), float(setting("LIFECYCLE_GRACE"))])

    async def flush(self) -> int:
        """Announce the keys whose grace window has ended and that have not come back; returns how many."""
        sent = 0
        for kind in KINDS:
            keys = [pending_key(kind), announced_key(kind), counts_key(PRESENCE_NAMES[kind]), STREAM]
            sent += int(await self._flush(keys=keys, args=[event_name(kind, False), MAXLEN, 1000]))
        return sent

    # -- consuming ------------------------------------------------------------------------------

    async def _serve(self) -> None:
        grace = float(setting("LIFECYCLE_GRACE"))
        flush_every = max(0.1, min(1.0, grace / 5))
        claim_every = max(0.5, float(setting("LIFECYCLE_CLAIM_AFTER")) / 3)
        next_flush = next_claim = 0.0
        grouped = False
        while True:
            try:
                if not grouped:
                    await self._ensure_group()
                    grouped = True
                now = time.monotonic()
                if now >= next_flush:
                    next_flush = now + flush_every
                    await self.flush()
                if now >= next_claim:
                    next_claim = now + claim_every
                    await self._claim()
                reply = await self.reader.xreadgroup(GROUP, PROCESS_ID, {STREAM: ">"}, count=BATCH, block=BLOCK_MS)
                for _stream, entries in _entries(reply):
                    await self._start(_decoded(entries))
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Redis away, or the group gone with the stream: start over
                logger.warning("Lifecycle events: %s; retrying", error)
                grouped = False
                await asyncio.sleep(1)

    async def _ensure_group(self) -> None:
        from redis.exceptions import ResponseError

        try:  # from the stream's start: entries appended before any process read are not lost
            await self.client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def _claim(self) -> None:
        """Keep this consumer's running entries fresh; take those a silent consumer has held too long."""
        if self.running:
            await self.client.xclaim(STREAM, GROUP, PROCESS_ID, 0, list(self.running), justid=True)
        idle_ms = int(float(setting("LIFECYCLE_CLAIM_AFTER")) * 1000)
        start = "0-0"
        for _ in range(10):  # bounded per round; the next round goes on
            start, entries, *_ = await self.client.xautoclaim(STREAM, GROUP, PROCESS_ID, idle_ms, start, count=BATCH)
            start = _text(start)
            await self._start([entry for entry in _decoded(entries) if entry[0] not in self.running])
            if start == "0-0":
                break

    async def _start(self, entries: list[Any]) -> None:
        """A task per entry (bounded: BATCH at once), which acknowledges it when its receivers have run."""
        for entry_id, fields in entries:
            if not fields:  # trimmed away while pending: nothing left to handle
                await self.client.xack(STREAM, GROUP, entry_id)
                continue
            await self.slots.acquire()
            task = asyncio.get_running_loop().create_task(self._handle(entry_id, fields))
            self.running[entry_id] = task

    async def _handle(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            await dispatch(fields.get("event", ""), json.loads(fields.get("key", "null")), entry_id,
                           float(fields.get("at", time.time())))
        except Exception:
            logger.exception("Lifecycle entry %s could not be handled", entry_id)
        finally:
            self.slots.release()
            try:
                await self.client.xack(STREAM, GROUP, entry_id)
            except Exception as error:  # pending still: claimed again after LIFECYCLE_CLAIM_AFTER
                logger.warning("Could not acknowledge lifecycle entry %s: %s", entry_id, error)
            self.running.pop(entry_id, None)

    async def aclose(self) -> None:
        if self.service is not None:
            self.service.cancel()
            with contextlib.suppress(BaseException):
                await self.service
        for task in list(self.running.values()):
            with contextlib.suppress(BaseException):
                await task
        await self.client.aclose()
        await self.reader.aclose()


def _entries(reply: Any) -> list[tuple[str, list[Any]]]:
    """XREADGROUP's answer as ``[(stream, entries)]``, whichever protocol version the client speaks."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(stream, entries[0] if entries and isinstance(entries[0], list) else entries)
                for stream, entries in reply.items()]
    return [(stream, entries) for stream, entries in reply]


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _decoded(entries: list[Any]) -> list[tuple[str, dict[str, str]]]:
    """Stream entries as ``(id, fields)`` in text (the clients answer bytes); a trimmed entry has no fields."""
    return [(_text(entry_id), {_text(k): _text(v) for k, v in (fields or {}).items()}) for entry_id, fields in entries]
