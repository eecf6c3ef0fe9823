"""Application heartbeats: one timer per interval for every open WebSocket, not one per socket.

A ``WebSocketView`` with ``keepalive = 30`` sends a heartbeat frame every 30 seconds, so that
proxies and NATs do not drop an idle connection. A timer handle per socket costs an idle
connection about 300 bytes on asyncio's loop and 600 on uvloop's; a :class:`Beat` is one timer
for all the sockets of one interval on one loop. Every socket joined to it beats at each tick, so
consecutive heartbeats of a socket are exactly ``interval`` apart and its first comes at most
``interval`` after the handshake (sooner, never later).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

#: The beats of each running loop, by interval.
_beats: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, Beat]] = weakref.WeakKeyDictionary()


class Beat:
    """The sockets that beat every ``interval`` seconds on one loop, and the timer that beats them."""

    __slots__ = ("_handle", "interval", "loop", "members")

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        #: The views to beat (their ``_beat()``), in the order they joined.
        self.members: dict[Any, None] = {}
        self._handle: asyncio.TimerHandle | None = None

    def join(self, member: Any) -> None:
        self.members[member] = None
        if self._handle is None:
            self._handle = self.loop.call_later(self.interval, self._tick)

    def leave(self, member: Any) -> None:
        self.members.pop(member, None)
        if not self.members and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        for member in list(self.members):
            member._beat()
        self._handle = self.loop.call_later(self.interval, self._tick) if self.members else None


def beat_for(interval: float) -> Beat:
    """The running loop's :class:`Beat` for ``interval`` seconds."""
    loop = asyncio.get_running_loop()
    beats = _beats.get(loop)
    if beats is None:
        beats = _beats[loop] = {}
    beat = beats.get(interval)
    if beat is None:
        beat = beats[interval] = Beat(loop, interval)
    return beat
