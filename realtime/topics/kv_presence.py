"""Presence on NATS KV (``NATS_URL`` without ``REDIS_URL``): one member per user across processes.

The same contract as :class:`realtime.topics.presence.RedisPresence`: ``join`` returns the member on the
user's first connection anywhere, ``leave`` on their last, and a dead process's members are reaped
by whichever process notices first, each user left with no connection announced once.

Redis does each step in one Lua script; here each step is one **compare-and-set on one key**
(``update``/``delete`` with the key's last revision, retried on a conflict), so every change to a
member is serialised by the server and exactly one writer sees a count reach 0 (and announces it).

Bucket ``realtime_presence`` (file storage, one revision per key), keys in base64url tokens:

- ``m.<channel>.<user>``: ``{"i": info, "p": {process: connections}}``, the member across processes;
- ``x.<process>.<channel>.<user>``: this process holds connections of that member (what a reaper walks),
  written *before* the count moves, so a reaper always finds what a process holds;
- ``procs.<process>``: the process has held members (the processes a reaper checks).

Bucket ``realtime_alive`` has a TTL of ``REALTIME["PRESENCE_TIMEOUT"]`` (a bucket-wide ``max_age``;
nats-server 2.9 has no per-key TTL, one bucket per purpose gives the same): each process with members
puts ``<process>`` every third of the timeout. A process listed in ``procs.`` whose key has expired is
dead: the reaper that deletes its ``procs.<process>`` key (compare-and-set: one wins) takes its
connections out of each member it held, then drops its index keys.

The lifecycle events' own presence names (``realtime.events``: ``\x00lifecycle:...``) stay in this
process's memory: their backend without Redis is per process (grace timers on this loop, asking
:data:`~realtime.topics.presence.memory_presence` whether a key came back), and counting them across
processes under a per-process timer would announce ``user_offline`` after another process's
``user_online``. Lifecycle events across processes need ``REDIS_URL``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from typing import Any

from ..conf import setting
from ..pubsub.channel import PROCESS_ID
from ..pubsub.nats import COMMAND_TIMEOUT, client

logger = logging.getLogger("realtime.presence")

BUCKET = "realtime_presence"
ALIVE = "realtime_alive"
#: Compare-and-set attempts before a join or leave gives up (each conflict is another writer's success).
ATTEMPTS = 100


def token(value: str) -> str:
    """A KV key token for any text (``[-_A-Za-z0-9]``)."""
    return base64.urlsafe_b64encode(value.encode("utf-8", "surrogatepass")).decode().rstrip("=")


def untoken(value: str) -> str:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("utf-8", "surrogatepass")


def _local(name: str) -> bool:
    """The lifecycle events' presence names, kept in this process (see the module's docstring)."""
    from ..events.signals import PRESENCE_NAMES

    return name in PRESENCE_NAMES.values()


def _conflict(error: BaseException) -> bool:
    """A compare-and-set that lost to another writer (JetStream's wrong-last-sequence errors)."""
    from nats.js.errors import APIError, KeyWrongLastSequenceError

    return isinstance(error, KeyWrongLastSequenceError) or (
        isinstance(error, APIError) and getattr(error, "err_code", None) in (10071, 10164))


class Listed:
    """One key of a listing: its name, its value, its revision (what a compare-and-set names)."""

    __slots__ = ("key", "revision", "value")

    def __init__(self, key: str, value: bytes, revision: int) -> None:
        self.key, self.value, self.revision = key, value, revision


class KVPresence:
    """Members shared by every process through NATS KV, for one event loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.local = 0  # this process's joined connections
        self._heartbeat: asyncio.Task[None] | None = None
        self._buckets: tuple[Any, Any] | None = None
        self._reconnects = -1

    @staticmethod
    def timeout() -> float:
        return float(setting("PRESENCE_TIMEOUT"))

    async def buckets(self) -> tuple[Any, Any]:
        """``(presence, alive)`` KV buckets, made when missing (looked up again after a reconnect)."""
        from nats.js import api
        from nats.js.errors import BucketNotFoundError

        connection = await client(self.url)
        if self._buckets is not None and connection.stats["reconnects"] == self._reconnects:
            return self._buckets
        js = connection.jetstream(timeout=COMMAND_TIMEOUT)
        found = []
        for name, ttl in ((BUCKET, None), (ALIVE, self.timeout())):
            try:
                found.append(await js.key_value(name))
            except BucketNotFoundError:
                found.append(await js.create_key_value(api.KeyValueConfig(
                    bucket=name, history=1, ttl=ttl, storage=api.StorageType.FILE)))
        self._buckets = (found[0], found[1])
        self._reconnects = connection.stats["reconnects"]
        return self._buckets

    async def _listed(self, bucket: str, pattern: str) -> list[Listed]:
        """The live entries of ``bucket`` whose key matches ``pattern``, by one short ordered consumer.

        Not nats-py's ``watch``: its end-of-values marker races its callback (seen here: a listing cut
        short, or none at all). Here the consumer's own figures say how many messages to read: those it
        delivered plus those pending when asked, each the last of its key (deleted keys skipped)."""
        from nats.js import api

        js = (await client(self.url)).jetstream(timeout=COMMAND_TIMEOUT)
        reader = await js.subscribe(
            f"$KV.{bucket}.{pattern}", stream=f"KV_{bucket}", ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT, inactive_threshold=10.0,
        )
        entries = []
        try:
            info = await reader.consumer_info()
            for _ in range(info.delivered.consumer_seq + info.num_pending):
                msg = await reader.next_msg(timeout=COMMAND_TIMEOUT)
                if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
                    continue
                entries.append(Listed(msg.subject[len(f"$KV.{bucket}."):], msg.data, msg.metadata.sequence.stream))
            return entries
        finally:
            from ..pubsub.jetstream import dropped

            await dropped(js, f"KV_{bucket}", reader)

    async def _change(self, kv: Any, key: str, change: Any) -> tuple[dict | None, dict | None]:
        """Apply ``change(value) -> new value or None (delete)`` to ``key`` by compare-and-set; returns
        ``(before, after)`` of the write that went through (``(None, None)`` when ``change`` declines)."""
        from nats.js.errors import KeyNotFoundError

        for _ in range(ATTEMPTS):
            try:
                entry = await kv.get(key)
                before, revision = json.loads(entry.value), entry.revision
            except KeyNotFoundError:
                before, revision = None, 0
            after = change(before)
            if after is before:
                return None, None
            try:
                if after is None:
                    await kv.delete(key, last=revision)
                elif revision:
                    await kv.update(key, json.dumps(after).encode(), last=revision)
                else:
                    await kv.create(key, json.dumps(after).encode())
            except Exception as error:
                if _conflict(error):
                    continue  # another process changed it first: read again
                raise
            return before, after
        raise RuntimeError(f"presence key {key!r} kept changing under {ATTEMPTS} attempts")

    async def join(self, name: str, user_id: Any, info: Any) -> dict[str, Any] | None:
        from .presence import member, memory_presence

        if _local(name):
            return await memory_presence.join(name, user_id, info)
        uid = json.dumps(user_id)
        self.local += 1  # before the await: the caller's leave() balances it even if this fails
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())
        kv, alive = await self.buckets()
        # Alive and listed before the count moves, so a reaper always finds what this process holds.
        await alive.put(PROCESS_ID, str(time.time()).encode())
        await kv.put(f"procs.{PROCESS_ID}", b"")
        await kv.put(f"x.{PROCESS_ID}.{token(name)}.{token(uid)}", b"")

        def add(value: dict | None) -> dict:
            counts = dict((value or {}).get("p") or {})
            counts[PROCESS_ID] = counts.get(PROCESS_ID, 0) + 1
            return {"i": info, "p": counts}

        _, after = await self._change(kv, f"m.{token(name)}.{token(uid)}", add)
        return member(user_id, info, 1) if after is not None and sum(after["p"].values()) == 1 else None

    async def leave(self, name: str, user_id: Any) -> dict[str, Any] | None:
        from .presence import member, memory_presence

        if _local(name):
            return await memory_presence.leave(name, user_id)
        uid = json.dumps(user_id)
        self.local -= 1
        if self.local <= 0 and self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        kv, _ = await self.buckets()

        def remove(value: dict | None) -> dict | None:
            if value is None or value.get("p", {}).get(PROCESS_ID, 0) <= 0:
                return value  # not held here (reaped meanwhile): nothing to do
            counts = dict(value["p"])
            counts[PROCESS_ID] -= 1
            if counts[PROCESS_ID] <= 0:
                del counts[PROCESS_ID]
            return {"i": value.get("i"), "p": counts} if counts else None

        before, after = await self._change(kv, f"m.{token(name)}.{token(uid)}", remove)
        if before is None:
            return None
        if PROCESS_ID not in (after or {}).get("p", {}):
            with contextlib.suppress(Exception):
                await kv.delete(f"x.{PROCESS_ID}.{token(name)}.{token(uid)}")
        return member(user_id, before.get("i"), 0) if after is None else None

    async def members(self, name: str) -> list[dict[str, Any]]:
        from .presence import member, memory_presence

        if _local(name):
            return await memory_presence.members(name)
        await self.reap()
        await self.buckets()  # made when missing
        found = []
        for entry in await self._listed(BUCKET, f"m.{token(name)}.*"):
            value = json.loads(entry.value)
            count = sum(value.get("p", {}).values())
            if count > 0:
                uid = untoken(entry.key.rsplit(".", 1)[1])
                found.append((uid, member(json.loads(uid), value.get("i"), count)))
        return [m for _, m in sorted(found, key=lambda pair: pair[0])]

    async def reap(self) -> None:
        """Take the members of processes silent for longer than the timeout out, and announce their leaves."""
        from nats.js.errors import KeyNotFoundError

        from .presence import announce, member, reap_listeners

        kv, alive = await self.buckets()
        living = {entry.key for entry in await self._listed(ALIVE, ">")}
        for entry in await self._listed(BUCKET, "procs.*"):
            process = entry.key.split(".", 1)[1]
            if process == PROCESS_ID or process in living:
                continue
            try:
                await kv.delete(entry.key, last=entry.revision)  # the claim: one reaper wins
            except Exception as error:
                if _conflict(error):
                    continue  # another process reaps it, or it came back
                raise
            try:
                await alive.get(process)
                continue  # it came back between the listing and the claim: its members are its own
            except KeyNotFoundError:
                pass
            for held in await self._listed(BUCKET, f"x.{process}.*.*"):
                _, _, channel_token, user_token = held.key.split(".", 3)

                def without(value: dict | None, process: str = process) -> dict | None:
                    if value is None or process not in value.get("p", {}):
                        return value
                    counts = {p: n for p, n in value["p"].items() if p != process}
                    return {"i": value.get("i"), "p": counts} if counts else None

                before, after = await self._change(kv, f"m.{channel_token}.{user_token}", without)
                with contextlib.suppress(Exception):
                    await kv.delete(held.key)
                if before is None or after is not None:
                    continue
                name, user_id = untoken(channel_token), json.loads(untoken(user_token))
                listener = reap_listeners.get(name)
                if listener is not None:
                    await listener(user_id)
                else:
                    await announce("leave", name, member(user_id, before.get("i"), 0))

    async def _beat(self) -> None:
        """While this process has members: say it is alive, and reap the processes that are not."""
        while True:
            try:
                kv, alive = await self.buckets()
                await alive.put(PROCESS_ID, str(time.time()).encode())
                await kv.put(f"procs.{PROCESS_ID}", b"")
                await self.reap()
            except Exception as error:  # NATS away: members expire elsewhere; try again
                logger.warning("Presence heartbeat failed: %s", error)
            await asyncio.sleep(self.timeout() / 3)

    def entries(self) -> int:
        return self.local

    async def aclose(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(BaseException):
                await self._heartbeat
