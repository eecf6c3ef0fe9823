"""Memory history ids in tests: ``"<epoch>-<n>"`` (realtime.pubsub.ids), written by their ``n``."""

from __future__ import annotations

from collections.abc import Callable

from realtime.pubsub import ids


def seq(message_id: str) -> int:
    """The ``n`` of a history id, checking it has the history-id shape."""
    parsed = ids.parse(message_id)
    assert parsed is not None and parsed != ids.START, f"not a history id: {message_id!r}"
    return parsed[1]


def epoch(message_id: str) -> int:
    """The epoch of a history id."""
    parsed = ids.parse(message_id)
    assert parsed is not None, f"not a history id: {message_id!r}"
    return parsed[0]


async def ids_of(channel) -> Callable[[int], str]:
    """``n -> id`` for a memory-history channel that has published at least once (its epoch is in its ids)."""
    newest = await channel.newest_id()
    assert newest is not None, "publish once before asking for the channel's ids"
    first = epoch(newest)
    return lambda n: ids.make(first, n)
