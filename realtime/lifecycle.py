"""Process lifecycle: whether the server is shutting down, for streams that should end politely.

The server adapters (``realtime.servers``) call :func:`begin_shutdown` on SIGTERM, before the server
drops anything. From then on the admission refuses every new connection (HTTP 503 with
``Retry-After``), every open WebSocket of a view is closed with 1001 and every SSE stream ends with
its last frame: the callbacks registered with :func:`on_shutdown` do it, and what they start is
handed back to the server to wait on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

_shutting_down = False
_waiters: set[asyncio.Future[None]] = set()
_callbacks: set[Callable[[], Awaitable[object] | None]] = set()


def shutting_down() -> bool:
    return _shutting_down


def begin_shutdown() -> list[Awaitable[object]]:
    """Called once when the server starts shutting down (SIGTERM), on its event loop.

    Returns what the callbacks started (the closes of open WebSockets), for the server to wait on
    before it drops connections.
    """
    global _shutting_down
    _shutting_down = True
    started = [result for callback in list(_callbacks) if (result := callback()) is not None]
    for waiter in list(_waiters):
        if not waiter.done():
            waiter.set_result(None)
    _waiters.clear()
    return started


def shutdown_future() -> asyncio.Future[None]:
    """A future that completes when shutdown begins (at once if it already has)."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    if _shutting_down:
        future.set_result(None)
    else:
        _waiters.add(future)
        future.add_done_callback(_waiters.discard)
    return future


def on_shutdown(callback: Callable[[], Awaitable[object] | None]) -> Callable[[], None]:
    """Call ``callback`` when shutdown begins; returns the function that cancels the call.

    ``callback`` may return an awaitable (a future, a task) for the server to wait on.
    """
    _callbacks.add(callback)
    return lambda: _callbacks.discard(callback)
