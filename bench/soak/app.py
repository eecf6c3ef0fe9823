"""The soak server: ``realtime`` on daphne, pushing one Channel to WebSockets and SSE streams.

- ``/ws``: a WebSocketView whose ``stream()`` yields everything published on ``Channel("soak")``.
- ``/sse``: an SSEView doing the same, one ``data:`` event per message.
- ``/publish?count=M&rate=R``: returns at once and starts an in-server task that publishes M
  messages ``{"seq": i, "ts": time.time()}`` at R msg/s (R=0: flat out, yielding once per message).
- ``/stats``: JSON counters; ``?gc=1`` runs ``gc.collect()`` first, ``?trim=1`` then calls glibc's
  ``malloc_trim(0)`` so freed arenas go back to the OS before RSS is read.

    daphne -b 127.0.0.1 -p PORT bench.soak.app:application
"""

import asyncio
import ctypes
import ctypes.util
import gc
import os
import sys
import time
import tracemalloc
from collections import Counter

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.soak.settings")

from django.core.asgi import get_asgi_application

django_http = get_asgi_application()  # django.setup() before realtime imports anything

import psutil  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import include, path  # noqa: E402

from realtime import Channel, CoreApp, Router, SSEView, WebSocketView  # noqa: E402

CHANNEL = Channel("soak")
COUNTS = {"ws": 0, "sse": 0}
PUBLISHER = {"published": 0, "delivered": 0, "target": 0, "running": False, "started": None, "finished": None}
TASKS: set = set()  # strong references to publisher tasks (asyncio keeps weak ones)
PROCESS = psutil.Process()
SNAPSHOTS: dict = {}  # tracemalloc snapshots by name, when SOAK_TRACEMALLOC=<frames> is set
if os.environ.get("SOAK_TRACEMALLOC"):
    tracemalloc.start(int(os.environ["SOAK_TRACEMALLOC"]))


class SoakWS(WebSocketView):
    keepalive = 15

    async def on_connect(self, ws, **params):
        COUNTS["ws"] += 1

    async def on_disconnect(self, ws, code):
        COUNTS["ws"] -= 1

    async def stream(self, ws, **params):
        async for message in CHANNEL.subscribe():
            yield message


class SoakSSE(SSEView):
    ping_interval = 15  # the SSE view's keepalive (": ping" comments)

    async def stream(self, request, **params):
        COUNTS["sse"] += 1
        try:
            async for message in CHANNEL.subscribe():
                yield {"data": message}
        finally:
            COUNTS["sse"] -= 1


async def _publish(count: int, rate: float) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    PUBLISHER.update(target=PUBLISHER["target"] + count, running=True, started=time.time())
    try:
        for seq in range(count):
            if rate > 0:
                delay = start + seq / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            PUBLISHER["delivered"] += await CHANNEL.publish({"seq": seq, "ts": time.time()})
            PUBLISHER["published"] += 1
            if rate <= 0:
                await asyncio.sleep(0)
    finally:
        PUBLISHER.update(running=False, finished=time.time())


async def publish(request):
    count = int(request.GET.get("count", "1"))
    rate = float(request.GET.get("rate", "0"))
    task = asyncio.ensure_future(_publish(count, rate))
    TASKS.add(task)
    task.add_done_callback(TASKS.discard)
    return JsonResponse({"ok": True, "count": count, "rate": rate})


def _malloc_trim() -> bool | None:
    """glibc's ``malloc_trim(0)``; None when the C library has no such function."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    libc = ctypes.CDLL(libc_name)
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    return bool(trim(0))


ARENA_REGIONS: set[int] = set()


def _pymalloc_stats() -> dict[str, int]:
    """The totals of ``sys._debugmallocstats()`` (it writes to the C stderr, so read it through a file)."""
    import tempfile

    with tempfile.TemporaryFile(mode="w+") as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read()
    totals = {}
    for line in text.splitlines():
        if line.startswith("#") and "=" in line:
            key, _, value = line[1:].partition("=")
            totals[key.strip()] = int(value.strip().replace(",", ""))
        elif " bytes in " in line and "=" in line:
            key, _, value = line.partition("=")
            totals[key.strip()] = int(value.strip().replace(",", ""))
    return totals


def _all_objects() -> dict[int, object]:
    """GC-tracked objects and what they refer to directly (strings, bytes, ints are not tracked)."""
    found = {id(o): o for o in gc.get_objects()}
    for o in list(found.values()):
        for r in gc.get_referents(o):
            found.setdefault(id(r), r)
    return found


def _arena_census(mode: str | None) -> dict | None:
    """``?arenas=base`` records which 1 MiB address regions hold objects; ``?arenas=diff`` then lists the
    objects living in regions the baseline did not use: few objects there pin whole pymalloc arenas."""
    if mode == "base":
        ARENA_REGIONS.clear()
        ARENA_REGIONS.update(addr >> 20 for addr in _all_objects())
        return {"regions": len(ARENA_REGIONS)}
    if mode != "diff":
        return None
    by_region: dict[int, Counter] = {}
    for addr, o in _all_objects().items():
        if addr >> 20 not in ARENA_REGIONS:
            by_region.setdefault(addr >> 20, Counter())[type(o).__name__] += 1
    types: Counter = Counter()
    for counts in by_region.values():
        types.update(counts)
    samples = [
        {"region": hex(region << 20), "objects": sum(c.values()), "types": c.most_common(6)}
        for region, c in sorted(by_region.items())[:: max(1, len(by_region) // 12)]
    ]
    return {"new_regions": len(by_region), "objects": sum(types.values()), "types": types.most_common(30),
            "samples": samples}


async def stats(request):
    collected = gc.collect() if request.GET.get("gc") else None
    trimmed = _malloc_trim() if request.GET.get("trim") else None
    census = None
    if request.GET.get("census"):  # live objects by type: tells a leak from memory the allocator keeps
        counts = Counter(type(o).__name__ for o in gc.get_objects())
        census = {"objects": sum(counts.values()), "top": counts.most_common(15)}
    survivors = None
    if tracemalloc.is_tracing() and request.GET.get("snapshot"):
        # ?snapshot=NAME keeps a snapshot; ?snapshot=NAME&diff=BASE also lists what NAME holds that BASE
        # did not: the allocation sites of blocks that outlived their connections.
        snap = SNAPSHOTS[request.GET["snapshot"]] = tracemalloc.take_snapshot()
        base = SNAPSHOTS.get(request.GET.get("diff", ""))
        if base is not None:
            stats_ = snap.compare_to(base, "traceback")
            survivors = [
                {"size_diff": st.size_diff, "count_diff": st.count_diff, "where": st.traceback.format()[-6:]}
                for st in stats_[:25]
            ]
    pinning = _arena_census(request.GET.get("arenas"))
    pymalloc = _pymalloc_stats() if request.GET.get("pymalloc") else None
    sinks = list(CHANNEL._subscribers)  # bench-only peek: drop-oldest counters of live subscribers
    return JsonResponse(
        {
            "ws_subscribers": COUNTS["ws"],
            "sse_streams": COUNTS["sse"],
            "channel_subscribers": CHANNEL.subscriber_count,
            "tasks": len(asyncio.all_tasks()),
            "rss": PROCESS.memory_info().rss,
            "gc_collected": collected,
            "allocated_blocks": sys.getallocatedblocks(),  # Python objects and buffers alive
            "census": census,
            "survivors": survivors,
            "pinning": pinning,
            "pymalloc": pymalloc,
            "malloc_trim": trimmed,
            "dropped_live": sum(getattr(s, "dropped", 0) for s in sinks),
            "queued_live": sum(s.queue.qsize() for s in sinks if hasattr(s, "queue")),
            "publisher": PUBLISHER,
            "num_fds": PROCESS.num_fds(),
            "threads": PROCESS.num_threads(),
        }
    )


router = Router()
router.register_websocket("/ws", SoakWS)
router.register_sse("/sse", SoakSSE)

urlpatterns = [path("publish", publish), path("stats", stats), path("", include(router.urls))]

application = CoreApp(routers=[router], http_app=django_http)
