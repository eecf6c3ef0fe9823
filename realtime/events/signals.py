"""The four lifecycle signals, and running their receivers for one event.

Each is a plain Django signal sent with ``sender=None``; receivers may be functions or coroutine
functions (Django's ``asend``: async receivers run on the event loop, sync ones in a thread through
``sync_to_async``). They receive ``event_id`` (the Redis Stream entry id, or ``"local-<n>"`` without
Redis: the same id for a redelivered entry, so a receiver can de-duplicate) and ``at`` (seconds since
the epoch when the change was recorded), and either ``user_id`` or ``channel``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

logger = logging.getLogger("realtime.events")

#: A user's first connection (WebSocket or SSE) in any process, unless it comes back within the grace window.
user_online = Signal()
#: A user's last connection gone in every process, and not back within the grace window.
user_offline = Signal()
#: A named channel's first subscriber in any process.
channel_occupied = Signal()
#: A named channel's last subscriber gone in every process, and none back within the grace window.
channel_vacated = Signal()

USERS, CHANNELS = "users", "channels"
#: What each kind of key is called in the signal's arguments, and its (appeared, gone) signals' names.
KINDS: dict[str, tuple[str, str, str]] = {
    USERS: ("user_id", "user_online", "user_offline"),
    CHANNELS: ("channel", "channel_occupied", "channel_vacated"),
}
#: The presence channel (``realtime.topics.presence``) where each kind's keys are members, one
#: connection per process that holds the key: presence decides "first" and "last" across processes.
PRESENCE_NAMES: dict[str, str] = {USERS: "\x00lifecycle:users", CHANNELS: "\x00lifecycle:channels"}
SIGNALS: dict[str, Signal] = {
    "user_online": user_online,
    "user_offline": user_offline,
    "channel_occupied": channel_occupied,
    "channel_vacated": channel_vacated,
}


def wanted(kind: str) -> bool:
    """True when this process has a receiver for ``kind``'s signals (else nothing of it is tracked)."""
    _, appeared, gone = KINDS[kind]
    return SIGNALS[appeared].has_listeners() or SIGNALS[gone].has_listeners()


def event_name(kind: str, present: bool) -> str:
    return KINDS[kind][1 if present else 2]


async def dispatch(name: str, key: Any, event_id: str, at: float) -> None:
    """Run every receiver of signal ``name`` once; a receiver that raises is logged and the others still run."""
    signal = SIGNALS.get(name)
    if signal is None:
        logger.error("Unknown lifecycle event %r (%s): dropped", name, event_id)
        return
    argument = KINDS[USERS if name.startswith("user_") else CHANNELS][0]
    results = await signal.asend_robust(sender=None, event_id=event_id, at=at, **{argument: key})
    for receiver, result in results:
        if isinstance(result, BaseException):
            logger.error("The %s receiver %r failed on %s", name, receiver, event_id,
                         exc_info=(type(result), result, result.__traceback__))
