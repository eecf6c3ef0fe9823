"""``Idempotency-Key``: a retried HTTP publish publishes once, whichever process the retry reaches.

The record of a key lives in **Redis** when ``REDIS_URL`` is set, and in this process otherwise (one
process is then the whole deployment). Redis, not the database, because the publish itself goes
through Redis (a deployment with several processes has it), ``SET NX`` claims a key atomically with
its expiry built in (no table to prune), and an async view need not take a database thread for it.

A record is, in turn:

- ``pending``: a request holds the key (``SET NX`` with a lease of :data:`LEASE` seconds). Another
  request with the key meanwhile gets 409: it may retry shortly.
- ``done``: the answer, kept ``REALTIME["IDEMPOTENCY_TTL"]`` seconds and replayed to every retry
  with ``Idempotent-Replayed: true`` and the same message ids.
- ``partial``: a batch stopped by an outage; the results of the messages that went out are kept and
  the retry publishes only the rest.

Where the promise ends: a process that dies between its publish and the record of the answer
leaves a ``pending`` record whose lease expires, and the retry after that publishes again (at least
once); a Redis restarted without persistence forgets every record. A retry with the same key and a
different request is refused (422): a key names one request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from .conf import setting
from .pubsub.redis import async_client, redis_url

#: Seconds a request holds its key before another may take it over (its process is presumed dead).
LEASE = 30.0
MAX_KEY_LENGTH = 255


@dataclass
class Claim:
    """What :meth:`IdempotencyStore.claim` found: ``state`` is "new", "done", "busy" or "mismatch"."""

    state: str
    #: "done": the stored answer (status, body); "new": the results already published by an earlier try.
    status: int = 200
    body: Any = None
    results: list[Any] = field(default_factory=list)
    #: The pending record this request wrote, to replace it only if it still holds the key.
    held: str | None = None


def valid_key(value: str) -> bool:
    """1-255 visible ASCII characters."""
    return 0 < len(value) <= MAX_KEY_LENGTH and all(33 <= ord(c) <= 126 for c in value)


def record_key(owner: Any, idempotency_key: str) -> str:
    """The Redis key of ``idempotency_key`` sent by API key ``owner`` (keys of two clients never collide)."""
    digest = hashlib.sha256(idempotency_key.encode("ascii")).hexdigest()
    return f"realtime:idempotency:{owner}:{digest}"


def fingerprint(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8") if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()


class IdempotencyStore:
    """The claim/finish protocol, over three primitives a backend provides: get, set_nx and cas."""

    async def get(self, key: str) -> str | None:
        raise NotImplementedError

    async def set_nx(self, key: str, value: str, ttl: float) -> bool:
        raise NotImplementedError

    async def cas(self, key: str, expected: str, value: str, ttl: float) -> bool:
        raise NotImplementedError

    async def claim(self, key: str, fp: str) -> Claim:
        """Take ``key`` for the request with fingerprint ``fp``, or say what holds it."""
        for _ in range(5):
            pending = _pending(fp, [])
            if await self.set_nx(key, pending, LEASE):
                return Claim("new", held=pending)
            current = await self.get(key)
            if current is None:
                continue  # it expired between the two calls
            record = json.loads(current)
            if record["fp"] != fp:
                return Claim("mismatch")
            if record["state"] == "done":
                return Claim("done", status=record["status"], body=record["body"])
            if record["state"] == "pending":
                return Claim("busy")
            pending = _pending(fp, record["results"])  # partial: carry on from where it stopped
            if await self.cas(key, current, pending, LEASE):
                return Claim("new", results=record["results"], held=pending)
        return Claim("busy")

    async def finish(self, key: str, claim: Claim, fp: str, status: int, body: Any) -> None:
        """Keep the answer for retries."""
        done = json.dumps({"fp": fp, "state": "done", "status": status, "body": body})
        await self.cas(key, claim.held or "", done, float(setting("IDEMPOTENCY_TTL")))

    async def stopped(self, key: str, claim: Claim, fp: str, results: list[Any]) -> None:
        """A try stopped after publishing ``results``: the next one publishes only the rest."""
        partial = json.dumps({"fp": fp, "state": "partial", "results": results})
        await self.cas(key, claim.held or "", partial, float(setting("IDEMPOTENCY_TTL")))


def _pending(fp: str, results: list[Any]) -> str:
    return json.dumps({"fp": fp, "state": "pending", "results": results, "token": secrets.token_hex(8)})


_CAS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


class RedisIdempotencyStore(IdempotencyStore):
    """Records in Redis, shared by every process (``REDIS_URL``)."""

    def __init__(self, url: str) -> None:
        self.client = async_client(url)  # one server, a cluster or a Sentinel master: REDIS_URL's kind
        self.script = self.client.register_script(_CAS)

    async def get(self, key: str) -> str | None:
        value = await self.client.get(key)
        return value.decode() if value is not None else None

    async def set_nx(self, key: str, value: str, ttl: float) -> bool:
        return bool(await self.client.set(key, value, nx=True, px=int(ttl * 1000)))

    async def cas(self, key: str, expected: str, value: str, ttl: float) -> bool:
        return bool(await self.script(keys=[key], args=[expected, value, int(ttl * 1000)]))


class MemoryIdempotencyStore(IdempotencyStore):
    """Records in this process, for a deployment of one process (no ``REDIS_URL``)."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[str, float]] = {}

    def _live(self, key: str) -> str | None:
        value = self.records.get(key)
        if value is None:
            return None
        if value[1] <= time.monotonic():
            del self.records[key]
            return None
        return value[0]

    async def get(self, key: str) -> str | None:
        return self._live(key)

    async def set_nx(self, key: str, value: str, ttl: float) -> bool:
        if self._live(key) is not None:
            return False
        if len(self.records) > 10000:  # expired records of keys never retried
            for stale in [k for k, (_, expires) in self.records.items() if expires <= time.monotonic()]:
                del self.records[stale]
        self.records[key] = (value, time.monotonic() + ttl)
        return True

    async def cas(self, key: str, expected: str, value: str, ttl: float) -> bool:
        if self._live(key) != expected:
            return False
        self.records[key] = (value, time.monotonic() + ttl)
        return True


_stores: dict[Any, IdempotencyStore] = {}


def store() -> IdempotencyStore:
    """This event loop's store for the current settings (Redis clients belong to one loop)."""
    url = redis_url()
    slot = (asyncio.get_running_loop(), url)
    found = _stores.get(slot)
    if found is None:
        for old in [s for s in _stores if s[0].is_closed()]:
            del _stores[old]
        found = _stores[slot] = RedisIdempotencyStore(url) if url else MemoryIdempotencyStore()
    return found
