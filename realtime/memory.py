"""Give freed memory back to the operating system after a wave of connections has gone.

A process that held thousands of connections keeps most of that memory after they leave, though
the objects are gone: glibc's ``malloc`` keeps freed chunks in its heap until ``malloc_trim`` is
called, and CPython's own allocator keeps every 1 MiB arena in which one object still lives. The
soak (``bench/soak``: 5,000 WebSockets and 1,000 SSE streams on one daphne) measured it, for
``realtime`` and for a hand-written ASGI app alike.

So ``realtime`` counts its open WebSockets and SSE streams, and when the count has fallen to half
its peak, by at least ``MIN_DROP`` connections, it empties CPython's type attribute cache (whose
entries hold name strings made during the wave, scattered one or two per arena: they kept about
70 of the soak's arenas), runs ``gc.collect()`` and then glibc's ``malloc_trim(0)`` in a
short-lived thread, once ``DELAY`` seconds have passed without a disconnect (a wave of disconnects
takes some seconds, and daphne frees what it kept of a connection a little later), and at most
once per ``MIN_INTERVAL``. With ``PYTHONMALLOC=malloc`` (every object on glibc) that returns nearly
all of it; with CPython's default allocator, the arenas that nothing lives in any more and the part
glibc holds. Where the C library has no ``malloc_trim`` (musl, macOS) the trim is skipped.
Long-lived objects of ``realtime`` itself are made at import, not during a wave (``_TRIM``).
``REALTIME["RELEASE_MEMORY"] = False`` turns it off.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import sys
import threading
import time
from array import array
from collections.abc import Callable

from .ops.stats import Slot

logger = logging.getLogger("realtime.memory")

#: A drop smaller than this many connections is not worth a trim.
MIN_DROP = 500
#: Seconds between trims, at least.
MIN_INTERVAL = 30.0
#: Seconds without a disconnect before the trim: the rest of the wave leaves, and daphne frees
#: what it kept of the closed connections, meanwhile.
DELAY = 3.0


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:  # the process's own symbols, the C library's among them (no ldconfig run at import)
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        trim = None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


#: Looked up at import, not at the first trim: the CDLL and its function objects live for good, and
#: made in the middle of a wave they would land among the closed connections' freed blocks and
#: keep their pymalloc arenas (1 MiB each) from going back to the OS.
_TRIM = _find_malloc_trim()


def _malloc_trim() -> Callable[[int], int] | None:
    return _TRIM


def release_memory() -> bool:
    """``malloc_trim(0)``: hand the free pages of every glibc arena back to the OS. Blocking."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


class OpenConnections:
    """Counts the process's open WebSockets and SSE streams, and trims memory after a big drop."""

    #: When the last connection closed and the last trim ran (``time.monotonic()``), in a C array:
    #: set at every close, a float attribute would leave its last value among the wave's freed blocks.
    _last_close = Slot(0, "_times")
    _last_trim = Slot(1, "_times")

    def __init__(self) -> None:
        self.count = 0
        self.peak = 0
        self.trims = 0
        self._times = array("d", [0.0, -MIN_INTERVAL])
        self._scheduled = False

    def opened(self) -> None:
        self.count += 1
        if self.count > self.peak:
            self.peak = self.count

    def closed(self) -> None:
        self.count -= 1
        self._last_close = time.monotonic()
        if (
            not self._scheduled
            and self.peak - self.count >= MIN_DROP
            and self.count * 2 <= self.peak
            and _enabled()
        ):
            self._scheduled = True
            asyncio.get_running_loop().call_later(DELAY, self._trim)

    def _trim(self) -> None:
        now = time.monotonic()
        wait = max(MIN_INTERVAL - (now - self._last_trim), DELAY - (now - self._last_close))
        if wait > 0:  # too soon after the last trim, or the wave is still leaving: look again then
            asyncio.get_running_loop().call_later(wait, self._trim)
            return
        self._scheduled = False
        self._last_trim = now
        self.peak = self.count  # the next wave is measured from here
        self.trims += 1
        logger.debug("Trimming the heap: %d connections open, the peak was higher by %d or more", self.count, MIN_DROP)
        # CPython's attribute cache holds a reference to the name of every lookup it caches, and C
        # code that looks a method up by a C string (``result``, ``derive``, ``split``, ``get`` ...)
        # makes a new str each time: after a wave, hundreds of those strings are scattered over the
        # arenas the closed connections used, one or two per arena, and keep every one of them (1 MiB
        # each) from going back to the OS. Clearing the cache frees them; it refills as it is used.
        clear_internal_caches()
        # Closed connections leave reference cycles (tasks, frames, protocol objects): free them
        # first, or their memory would be freed after the trim and stay in the heap. One full
        # collection per wave, on the loop (it holds the GIL wherever it runs).
        gc.collect()
        if _malloc_trim() is not None:
            # In a thread: trimming a large heap takes milliseconds, and the loop need not wait for it.
            threading.Thread(target=release_memory, name="realtime-malloc-trim", daemon=True).start()


#: ``sys._clear_internal_caches`` (3.13+: the type attribute cache and the JIT's) or, before it,
#: ``sys._clear_type_cache``; private CPython functions, so looked up and skipped where absent.
_CLEAR_CACHES: Callable[[], None] | None = getattr(sys, "_clear_internal_caches", None) or getattr(
    sys, "_clear_type_cache", None)


def clear_internal_caches() -> bool:
    """Empty CPython's type attribute cache, releasing the name strings it holds; False where unavailable."""
    if _CLEAR_CACHES is None:
        return False
    _CLEAR_CACHES()
    return True


def _enabled() -> bool:
    from .conf import setting

    return bool(setting("RELEASE_MEMORY"))


open_connections = OpenConnections()
