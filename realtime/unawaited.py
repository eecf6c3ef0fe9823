"""A coroutine that says so, loudly, when it is dropped without ever being awaited.

``await channel.publish(message)`` is the API; in a sync Django view, ``channel.publish(message)``
without ``await`` returns a coroutine that never runs: nothing is delivered, and Python's own
``RuntimeWarning: coroutine ... was never awaited`` comes at garbage collection, once per place,
often unseen. A call made with no running event loop is wrapped in :class:`Guarded`, which logs an
error naming the call, where it was made and the fix (``publish_sync``) when it is dropped unawaited.

It is not refused at the call, because two correct idioms also call with no running loop and
await later, in a loop of their own: ``async_to_sync(channel.publish)(message)`` (asgiref makes the
coroutine in the calling thread) and ``asyncio.run(channel.publish(message))``. Only the call path
with no running loop pays for the wrapper; in async code the plain coroutine is returned.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Coroutine, Generator
from typing import Any

logger = logging.getLogger("realtime.channel")


class Guarded[T](Coroutine[Any, Any, T]):
    """``coroutine`` as is, for ``await``, tasks, ``asyncio.run`` and ``async_to_sync``; an error
    is logged if it is dropped without having been awaited or closed."""

    __slots__ = ("_call", "_coroutine", "_fix", "_used", "_where")

    def __init__(self, coroutine: Coroutine[Any, Any, T], call: str, fix: str | None, depth: int = 2) -> None:
        self._coroutine = coroutine
        self._call = call
        self._fix = fix
        self._used = False
        frame = sys._getframe(depth)  # the caller of the API method that wrapped the coroutine
        self._where = f"{frame.f_code.co_filename}:{frame.f_lineno}"

    def __await__(self) -> Generator[Any, None, T]:
        self._used = True
        return self._coroutine.__await__()

    def send(self, value: Any) -> Any:
        self._used = True
        return self._coroutine.send(value)

    def throw(self, *args: Any) -> Any:
        self._used = True
        return self._coroutine.throw(*args)

    def close(self) -> None:
        self._used = True
        self._coroutine.close()

    def __del__(self) -> None:
        if self._used:
            return
        self._coroutine.close()  # no RuntimeWarning of Python's: the line below says more
        if self._fix is None:  # a result already decided (a publish held until commit): nothing was lost
            return
        logger.error("%s at %s was never awaited: nothing was done. %s", self._call, self._where, self._fix)


def unawaited_publish[T](
    coroutine: Coroutine[Any, Any, T], channel: str | None, method: str, message: Any
) -> Guarded[T]:
    """``Channel.publish`` (or ``publish_with_id``) called with no running loop: fine when awaited later
    (``async_to_sync``, ``asyncio.run``), logged with the fix when it never is."""
    text = repr(message)
    call = f"Channel({channel!r}).{method}({text if len(text) <= 40 else text[:37] + '...'})"
    fix = ("In sync code (a Django view, a management command, a thread) call channel.publish_sync(message); "
           f"in async code, await channel.{method}(message).")
    return Guarded(coroutine, call, fix, depth=3)


def decided[T](result: T) -> Guarded[T]:
    """An awaitable of ``result`` that may be dropped unawaited in silence: what a publish held until the
    commit returns to sync code (the publish happens at the commit whether or not this is awaited)."""

    async def ready() -> T:
        return result

    return Guarded(ready(), "", None)
