"""Who is online on the demo site, from realtime's lifecycle events (``user_online``, ``user_offline``).

The receivers keep one record, the *board*: the users online, and the id of the last change
published. Each lifecycle event reaches one receiver in one process (a Redis Stream with a consumer
group), so the board must be shared: it lives in the cache alias ``online`` (project/settings.py),
which is the ``REDIS_URL`` Redis with it (the Redis that keeps the lifecycle events' own state, so
both last as long as each other) and this process's memory without it (one process, whose
lifecycle events are in its memory too).

A change is published on the channel ``online`` (the :class:`Online` topic), then applied to the
board with the id ``publish`` returned, under a lock (``cache.add``), one writer at a time across
processes. So the board always holds every change up to its ``last_id`` and none after it: what
``Topic.snapshot`` needs to hand a new chat client the list and then exactly the changes after it.

An event older than the board's record of that user (``at``) is skipped: receivers run
concurrently, and an entry a dead process held is run again by another one (at least once across
that crash) possibly after a newer one.

Limits, fine for a demo: the board is one key (every change rewrites it); changes are applied one
at a time across the deployment (a handful of cache round trips and a publish each); a writer
stalled past ``LOCK_TIMEOUT`` loses the lock to the next one, and a change that cannot be published
(Redis away) is lost, as the lifecycle events' own changes are then.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import caches

from realtime import Snapshot, Topic
from realtime.permissions import IsAuthenticated

logger = logging.getLogger("project.chat")

CACHE = "online"
BOARD = "chat:online:board"
LOCK = "chat:online:lock"
#: Seconds a writer may hold the lock before another takes it (a writer that died): well above a
#: publish (bounded by realtime's Redis timeouts) plus two cache writes.
LOCK_TIMEOUT = 30
#: How long the board remembers a user who went offline, so an older event of theirs is not applied.
FORGET_AFTER = 3600


class Online(Topic):
    """``online``: ``{"op": "online" | "offline", "user": {"id", "name"}, "at"}``, the site's logins and logouts."""

    pattern = "online"
    permission_classes = [IsAuthenticated]
    history = 200  # the snapshot is continued from history

    async def snapshot(self, user: Any, **params: Any) -> Snapshot:
        board = await read_board()
        return Snapshot(listed(board), board["last_id"])


def enabled() -> bool:
    """``settings.DEMO_ONLINE_LIST`` (on in the demo; the test settings turn it off but for the tests of it)."""
    return bool(getattr(settings, "DEMO_ONLINE_LIST", True))


def empty_board() -> dict[str, Any]:
    #: online: user id (text) → {"name", "at"}; gone: user id → when they went offline.
    return {"online": {}, "gone": {}, "last_id": None}


def listed(board: dict[str, Any]) -> list[dict[str, Any]]:
    """The board's online users, ``[{"id", "name"}]`` by name: the snapshot a chat client starts from."""
    users = [{"id": int(uid), "name": entry["name"]} for uid, entry in board["online"].items()]
    return sorted(users, key=lambda user: (user["name"], user["id"]))


async def read_board() -> dict[str, Any]:
    return await caches[CACHE].aget(BOARD) or empty_board()


async def user_name(user_id: Any) -> str | None:
    found = await get_user_model().objects.filter(pk=user_id).values_list("username", flat=True).afirst()
    return str(found) if found is not None else None


async def record(user_id: Any, online: bool, at: float) -> str | None:
    """Publish and apply one change, one writer at a time; the id published, or None (nothing new)."""
    cache = caches[CACHE]
    token = uuid.uuid4().hex
    deadline = time.monotonic() + LOCK_TIMEOUT + 5
    while not await cache.aadd(LOCK, token, LOCK_TIMEOUT):
        if time.monotonic() > deadline:
            raise TimeoutError("the online board's lock was never free")
        await asyncio.sleep(0.02)
    try:
        board = await read_board()
        uid = str(user_id)
        known = board["online"].get(uid)
        last_at = known["at"] if known else board["gone"].get(uid)
        if last_at is not None and at <= last_at:
            return None  # older than what the board holds of them, or this very event run again
        if online:
            name = await user_name(user_id)
            if name is None:
                return None  # deleted meanwhile
        elif known is None:
            board["gone"][uid] = at  # never listed: nobody to tell, but remember the time
            await cache.aset(BOARD, board, None)
            return None
        else:
            name = known["name"]
        message = {"op": "online" if online else "offline", "user": {"id": user_id, "name": name}, "at": at}
        # At once, not on commit: the id must be on the board before the next writer publishes.
        _, last_id = await Online.channel().publish_with_id(message, on_commit=False)
        if online:
            board["online"][uid] = {"name": name, "at": at}
            board["gone"].pop(uid, None)
        else:
            del board["online"][uid]
            board["gone"][uid] = at
        board["gone"] = {key: when for key, when in board["gone"].items() if when > at - FORGET_AFTER}
        board["last_id"] = last_id
        await cache.aset(BOARD, board, None)
        return last_id
    finally:
        if await cache.aget(LOCK) == token:  # not a lock another writer took after ours expired
            await cache.adelete(LOCK)


async def went_online(sender: Any, user_id: Any, event_id: str, at: float, **kwargs: Any) -> None:
    await record(user_id, True, at)


async def went_offline(sender: Any, user_id: Any, event_id: str, at: float, **kwargs: Any) -> None:
    await record(user_id, False, at)


def connect() -> None:
    """Connect the receivers (from ``ChatConfig.ready``, so every process has them before its first connection)."""
    from realtime.events import user_offline, user_online

    user_online.connect(went_online, weak=False, dispatch_uid="project.chat.online")
    user_offline.connect(went_offline, weak=False, dispatch_uid="project.chat.offline")
