"""Presence: who is subscribed to a channel, one member per user with their number of connections.

In memory (one process) without ``REDIS_URL``; in Redis with it, so every process sees the same
members; on NATS KV with ``NATS_URL`` alone (:mod:`realtime.topics.kv_presence`). ``join`` returns
the member on the user's *first* connection and ``leave`` on their *last*, across processes; only
then is a ``join``/``leave`` frame published, on the channel's companion channel (:func:`companion`),
so each subscriber everywhere sees it once.

Redis layout, under ``realtime:presence:``: per channel, under its hash tag ``{rt:<n>}`` (one
cluster slot for all three), ``c:<channel>`` (user → connections, all processes), ``i:<channel>``
(user → info) and ``p:<process>:<channel>`` (user → this process's connections); per process,
``{proc:<process>}:channels`` (the channels where it has members); and the sorted set ``alive``
(process → last heartbeat). Every script declares its keys, all in one channel's slot.
Each process with members heartbeats every
third of ``REALTIME["PRESENCE_TIMEOUT"]`` (30 s); a process silent for longer is reaped by whichever
process notices first: the one whose ``ZREM`` removes it from ``alive`` walks its channels and, per
channel in one script, subtracts its connections; the users left with none get their ``leave``.
No member cap: a channel's members are one hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..conf import setting
from ..pubsub.channel import PROCESS_ID, Channel, registry
from ..pubsub.redis import async_client, channel_tag
from .channels import release_channel

logger = logging.getLogger("realtime.presence")

PREFIX = "realtime:presence:"
#: The companion channel of ``name`` carries its join and leave frames (no history, never resumed).
COMPANION = "\x00presence:"


#: Presence channels that are not announced to subscribers: a reaped member of one of these names is
#: handed to its listener instead, as ``await listener(member_id)`` (``realtime.events`` counts users'
#: and channels' processes in such channels and hears there of those a dead process held).
reap_listeners: dict[str, Callable[[Any], Awaitable[None]]] = {}




def companion(name: str) -> Channel:
    """The process's companion channel of ``name``, where join and leave frames are published."""
    key = COMPANION + name
    return registry.get(key) or Channel(key, maxlen=1000)


async def announce(op: str, name: str, member: dict[str, Any]) -> None:
    """Publish a ``join`` or ``leave`` frame to every process's subscribers of ``name``."""
    channel = companion(name)
    try:
        await channel.publish({"op": op, "channel": name, "member": member})
    except Exception:
        logger.exception("Could not announce %s on %r", op, name)
    release_channel(channel)


def member(user_id: Any, info: Any, connections: int) -> dict[str, Any]:
    return {"id": user_id, "info": info, "connections": connections}


class MemoryPresence:
    """Members of this process's channels."""

    def __init__(self) -> None:
        self.channels: dict[str, dict[Any, list[Any]]] = {}

    async def join(self, name: str, user_id: Any, info: Any) -> dict[str, Any] | None:
        entry = self.channels.setdefault(name, {}).setdefault(user_id, [0, info])
        entry[0] += 1
        return member(user_id, entry[1], 1) if entry[0] == 1 else None

    async def leave(self, name: str, user_id: Any) -> dict[str, Any] | None:
        users = self.channels.get(name, {})
        entry = users.get(user_id)
        if entry is None:
            return None
        entry[0] -= 1
        if entry[0] > 0:
            return None
        del users[user_id]
        if not users:
            del self.channels[name]
        return member(user_id, entry[1], 0)

    async def members(self, name: str) -> list[dict[str, Any]]:
        return [member(user_id, info, count) for user_id, (count, info) in self.channels.get(name, {}).items()]

    def entries(self) -> int:
        """Members held, all channels together (tests check nothing is left behind)."""
        return sum(len(users) for users in self.channels.values())


_JOIN = """
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
local total = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return total
"""

_LEAVE = """
local mine = redis.call('HINCRBY', KEYS[3], ARGV[1], -1)
if mine <= 0 then redis.call('HDEL', KEYS[3], ARGV[1]) end
if mine < 0 then return {-1, false} end
local total = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
local info = redis.call('HGET', KEYS[2], ARGV[1])
if total <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return {total, info}
"""

#: One dead process's connections to one channel: KEYS are that channel's (one slot), all declared.
_REAP = """
local fields = redis.call('HGETALL', KEYS[1])
local gone = {}
for i = 1, #fields, 2 do
  local total = redis.call('HINCRBY', KEYS[2], fields[i], -tonumber(fields[i + 1]))
  if total <= 0 then
    local info = redis.call('HGET', KEYS[3], fields[i])
    redis.call('HDEL', KEYS[2], fields[i])
    redis.call('HDEL', KEYS[3], fields[i])
    table.insert(gone, fields[i])
    table.insert(gone, info or 'null')
  end
end
redis.call('DEL', KEYS[1])
return gone
"""


def channel_keys(name: str, process: str) -> list[str]:
    """``[counts, infos, the process's counts]`` of channel ``name``: one hash tag, so one cluster slot."""
    base = f"{PREFIX}{channel_tag(name)}:"
    return [f"{base}c:{name}", f"{base}i:{name}", f"{base}p:{process}:{name}"]


def counts_key(name: str) -> str:
    """The Redis hash of ``name``'s members and their connections, all processes together (JSON ids as fields)."""
    return channel_keys(name, PROCESS_ID)[0]


def process_channels(process: str) -> str:
    """The set of channels where ``process`` has members (what a reaper walks)."""
    return f"{PREFIX}{{proc:{process}}}:channels"


class RedisPresence:
    """Members shared by every process through Redis, for one event loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = async_client(url)
        self.alive = PREFIX + "alive"
        self.channels = process_channels(PROCESS_ID)
        self._join = self.client.register_script(_JOIN)
        self._leave = self.client.register_script(_LEAVE)
        self._reap = self.client.register_script(_REAP)
        self.local = 0  # this process's joined connections
        self._heartbeat: asyncio.Task[None] | None = None

    @staticmethod
    def timeout() -> float:
        return float(setting("PRESENCE_TIMEOUT"))

    async def join(self, name: str, user_id: Any, info: Any) -> dict[str, Any] | None:
        uid = json.dumps(user_id)
        self.local += 1  # before the await: the caller's leave() balances it even if this fails
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())
        # Alive and listed before the counts move, so a reaper always finds what this process holds.
        await self.client.zadd(self.alive, {PROCESS_ID: time.time()})
        await self.client.sadd(self.channels, name)
        total = await self._join(keys=channel_keys(name, PROCESS_ID), args=[uid, json.dumps(info)])
        return member(user_id, info, 1) if int(total) == 1 else None

    async def leave(self, name: str, user_id: Any) -> dict[str, Any] | None:
        uid = json.dumps(user_id)
        self.local -= 1
        if self.local <= 0 and self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        total, info = await self._leave(keys=channel_keys(name, PROCESS_ID), args=[uid])
        if int(total) != 0:
            return None
        return member(user_id, json.loads(info) if info is not None else None, 0)

    async def members(self, name: str) -> list[dict[str, Any]]:
        await self.reap()
        counts_hash, infos_key, _ = channel_keys(name, PROCESS_ID)
        counts = await self.client.hgetall(counts_hash)
        infos = await self.client.hgetall(infos_key)
        found = []
        for uid, count in sorted(counts.items()):
            if int(count) > 0:
                info = infos.get(uid)
                found.append(member(json.loads(uid), json.loads(info) if info is not None else None, int(count)))
        return found

    async def reap(self) -> None:
        """Take the members of processes silent for longer than the timeout out, and announce their leaves."""
        dead = await self.client.zrangebyscore(self.alive, "-inf", time.time() - self.timeout())
        for process in dead:
            if not await self.client.zrem(self.alive, process):
                continue  # another process reaps it
            process = process.decode() if isinstance(process, bytes) else process
            listed = process_channels(process)
            for raw in await self.client.smembers(listed):
                name = raw.decode() if isinstance(raw, bytes) else raw
                counts, infos, held = channel_keys(name, process)
                gone = await self._reap(keys=[held, counts, infos], args=[])
                listener = reap_listeners.get(name)
                for i in range(0, len(gone), 2):
                    if listener is not None:
                        await listener(json.loads(gone[i]))
                    else:
                        await announce("leave", name, member(json.loads(gone[i]), json.loads(gone[i + 1]), 0))
            await self.client.delete(listed)

    async def _beat(self) -> None:
        """While this process has members: say it is alive, and reap the processes that are not."""
        while True:
            try:
                await self.client.zadd(self.alive, {PROCESS_ID: time.time()})
                await self.reap()
            except Exception as error:  # Redis away: members expire elsewhere; try again
                logger.warning("Presence heartbeat failed: %s", error)
            await asyncio.sleep(self.timeout() / 3)

    def entries(self) -> int:
        return self.local

    async def aclose(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(BaseException):
                await self._heartbeat
        await self.client.aclose()


memory_presence = MemoryPresence()
