"""Lifecycle events in one process (no ``REDIS_URL``): grace timers on this event loop, receivers run at once.

What presence (``realtime.topics.presence.MemoryPresence``) says is the key's first or last process
connection arrives here; a key gone waits ``REALTIME["LIFECYCLE_GRACE"]`` seconds and is announced
only if it has not come back. Nothing survives the process: a restart forgets who was announced.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

from ..conf import setting
from .signals import dispatch, event_name


class MemoryEvents:
    """The one-process backend: ``appeared`` / ``vanished`` as the tracker calls them, in order."""

    def __init__(self, present: Callable[[str, Any], bool]) -> None:
        self.present = present  # is ``key`` of ``kind`` held by a connection now (presence's count)?
        self.announced: dict[str, set[Any]] = {}
        self.pending: dict[tuple[str, Any], asyncio.TimerHandle] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.ids = itertools.count(1)

    def start(self) -> None:
        """Nothing runs in the background: timers are set per key."""

    async def appeared(self, kind: str, key: Any) -> None:
        timer = self.pending.pop((kind, key), None)
        if timer is not None:  # back within the grace window: nothing happened
            timer.cancel()
            return
        announced = self.announced.setdefault(kind, set())
        if key not in announced:
            announced.add(key)
            self._emit(event_name(kind, True), key)

    async def vanished(self, kind: str, key: Any) -> None:
        old = self.pending.pop((kind, key), None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self.pending[(kind, key)] = loop.call_later(float(setting("LIFECYCLE_GRACE")), self._due, kind, key)

    def _due(self, kind: str, key: Any) -> None:
        self.pending.pop((kind, key), None)
        announced = self.announced.get(kind, set())
        if not self.present(kind, key) and key in announced:
            announced.discard(key)
            self._emit(event_name(kind, False), key)

    def _emit(self, name: str, key: Any) -> None:
        """A task per event: receivers never run in the connection's turn."""
        task = asyncio.get_running_loop().create_task(dispatch(name, key, f"local-{next(self.ids)}", time.time()))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def aclose(self) -> None:
        for timer in self.pending.values():
            timer.cancel()
        self.pending.clear()
