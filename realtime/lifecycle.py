"""Process lifecycle: whether the server is shutting down, for streams that should end politely."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

_shutting_down = False
_waiters: set[asyncio.Future[None]] = set()
_callbacks: set[Callable[[], None]] = set()


def shutting_down() -> bool:
    return _shutting_down


def begin_shutdown() -> None:
    """Called once when the server starts shutting down (SIGTERM)."""
    global _shutting_down
    _shutting_down = True
    for callback in list(_callbacks):
        callback()
    for waiter in list(_waiters):
        if not waiter.done():
            waiter.set_result(None)
    _waiters.clear()


def shutdown_future() -> asyncio.Future[None]:
    """A future that completes when shutdown begins (at once if it already has)."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    if _shutting_down:
        future.set_result(None)
    else:
        _waiters.add(future)
        future.add_done_callback(_waiters.discard)
    return future


def on_shutdown(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` when shutdown begins; returns the function that cancels the call."""
    _callbacks.add(callback)
    return lambda: _callbacks.discard(callback)
