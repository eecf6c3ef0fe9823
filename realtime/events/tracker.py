"""Where the lifecycle events learn of changes: this process's first and last connection of a user
and first and last subscriber of a channel, told by the places that already count them.

- a user: ``realtime.security``'s per-process counters of WebSockets and SSE streams
  (``ConnectionCounter.observers``), which the admission fills;
- a channel: ``realtime.pubsub.channel``'s ``occupancy_observers``, told by ``Channel.attach`` and
  ``detach`` (realtime's own channels are left out: the revocation control channel, and those whose
  names start with ``"\\x00"``, such as presence's companions).

Each transition is queued and handled in order by one task per event loop, off the connection's
turn: presence (``realtime.topics.presence``) counts the processes that hold the key, in Redis with
``REDIS_URL``, and says whether this was the first or the last of them; the backend
(:mod:`.stream` or :mod:`.memory`) then debounces and announces. A process that dies is reaped by
presence after ``PRESENCE_TIMEOUT``, and its keys go through the same grace window.

Nothing is tracked for a kind no receiver listens to in this process (connect receivers in an
``AppConfig.ready()``, so every process has them before its first connection).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from ..pubsub.channel import occupancy_observers
from ..pubsub.redis import redis_url
from ..revocation import CONTROL_CHANNEL
from ..security import sse_users, websocket_users
from ..topics.presence import memory_presence, reap_listeners
from ..topics.stores import presence_store
from .memory import MemoryEvents
from .signals import CHANNELS, PRESENCE_NAMES, USERS, wanted
from .stream import RedisEvents

logger = logging.getLogger("realtime.events")


class Tracker:
    """One event loop's queue of transitions and the task that hands them to presence and the backend."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        url = redis_url()
        self.backend: RedisEvents | MemoryEvents = RedisEvents(url) if url else MemoryEvents(_present_in_memory)
        self.queue: asyncio.Queue[tuple[str, Any, bool]] = asyncio.Queue()
        #: Per kind, how many of this process's counters hold each key (a user's WebSockets and SSE
        #: streams are counted apart): presence hears of the first and the last of them only.
        self.held: dict[str, Counter[Any]] = {USERS: Counter(), CHANNELS: Counter()}
        self.worker = loop.create_task(self._work())

    def tell(self, kind: str, key: Any, present: bool) -> None:
        held = self.held[kind]
        if present:
            if not held[key] and not wanted(kind):
                return
            held[key] += 1
            if held[key] > 1:
                return
        elif held.get(key, 0) > 1:
            held[key] -= 1
            return
        elif held.pop(key, None) is None:  # its arrival was not tracked
            return
        self.queue.put_nowait((kind, key, present))

    async def _work(self) -> None:
        self.backend.start()
        while True:
            kind, key, present = await self.queue.get()
            name = PRESENCE_NAMES[kind]
            try:
                store = presence_store()
                if present:
                    if await store.join(name, key, None) is not None:
                        await self.backend.appeared(kind, key)
                elif await store.leave(name, key) is not None:
                    await self.backend.vanished(kind, key)
            except Exception:  # Redis away: this change is lost, presence reaps this process's keys later
                logger.exception("Could not record that %s %r %s", kind, key, "arrived" if present else "left")

    async def aclose(self) -> None:
        self.worker.cancel()
        await asyncio.gather(self.worker, return_exceptions=True)
        await self.backend.aclose()


def _present_in_memory(kind: str, key: Any) -> bool:
    return key in memory_presence.channels.get(PRESENCE_NAMES[kind], {})


_trackers: dict[asyncio.AbstractEventLoop, Tracker] = {}


def tracker() -> Tracker:
    """The running loop's tracker (created, with its task, on first use)."""
    loop = asyncio.get_running_loop()
    found = _trackers.get(loop)
    if found is None:
        for old in [old for old in _trackers if old.is_closed()]:
            del _trackers[old]
        found = _trackers[loop] = Tracker(loop)
    return found


def _observe(kind: str, key: Any, present: bool) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # counted outside an event loop (a sync test): no connection to track
        return
    if loop not in _trackers and not wanted(kind):
        return  # no receiver, nothing held: no tracker, no task, no Redis client for this loop
    tracker().tell(kind, key, present)


def _user(key: object, present: bool) -> None:
    _observe(USERS, key, present)


def _channel(name: str, occupied: bool) -> None:
    if not name.startswith("\x00") and name != CONTROL_CHANNEL:
        _observe(CHANNELS, name, occupied)


def _reaped(kind: str) -> Any:
    async def listener(key: Any) -> None:
        try:
            await tracker().backend.vanished(kind, key)
        except Exception:
            logger.exception("Could not record that a dead process's %s %r left", kind, key)

    return listener


def install() -> None:
    """Listen to the counters, the channels and presence's reaper (from ``AppConfig.ready``; idempotent)."""
    for counter in (websocket_users, sse_users):
        if _user not in counter.observers:
            counter.observers.append(_user)
    if _channel not in occupancy_observers:
        occupancy_observers.append(_channel)
    for kind, name in PRESENCE_NAMES.items():
        reap_listeners.setdefault(name, _reaped(kind))
