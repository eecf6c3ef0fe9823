"""History ids: the one place they are made, read and compared.

Every history id has the shape of a Redis stream id, ``"<epoch>-<n>"`` (two unsigned 64-bit
integers), and is read by :func:`parse`, whichever history made it:

- a Redis Stream's ids are Redis's own (``"1732550000000-0"``: milliseconds, then a sequence);
- a memory history's ids are ``"<epoch>-<n>"``: ``n`` counts that history's messages from 1 and
  ``epoch`` is when the history began, in **microseconds** since 1970 (:func:`new_epoch`). A
  history made again (the process restarted) has another epoch, so an id of the old one is never
  mistaken for a position in the new one: a resume from another epoch is "not recovered", where
  ``"3"`` used to be read as the new history's third message.

Why microseconds: two processes started in the same millisecond still get different epochs, and
a memory id is never a position in a Redis Stream of today (its first part is a thousand times any
Redis millisecond): a deployment that moves from memory to Redis history answers "not recovered"
to the old ids instead of replaying from a wrong place. Within a process, epochs only increase.

``"0"`` (or ``"0-0"``) is :data:`START` on both backends: "I have seen nothing; send everything
you hold". Its replay is recovered only when the history holds every message since it began
(nothing trimmed away).
"""

from __future__ import annotations

import re
import threading
import time

#: The id before every message: a resume from it asks for everything the history holds.
START = (0, 0)

_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
_U64 = 1 << 64
_epoch_lock = threading.Lock()
_last_epoch = 0


def parse(value: object) -> tuple[int, int] | None:
    """``(epoch, n)`` of a history id (``"0"`` is :data:`START`), or None when it is not one."""
    if type(value) is not str:
        return None
    if value == "0":
        return START
    match = _ID.fullmatch(value)
    if match is None:
        return None
    epoch, n = int(match[1]), int(match[2])
    return (epoch, n) if epoch < _U64 and n < _U64 else None


def make(epoch: int, n: int) -> str:
    """The id of message ``n`` of the history begun at ``epoch``."""
    return f"{epoch}-{n}"


def new_epoch() -> int:
    """A new memory history's epoch: now in microseconds, above every epoch made before in this process."""
    global _last_epoch
    with _epoch_lock:
        _last_epoch = max(time.time_ns() // 1000, _last_epoch + 1)
        return _last_epoch
