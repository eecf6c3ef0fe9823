"""What the soak asks a server process about its memory, shared by the realtime app and its peer.

Nothing here imports Django: the peer (``bench/soak/peer_app.py``) is measured without it.
``process_stats(query)`` answers ``/stats``; its query flags:

- ``gc=1`` runs ``gc.collect()`` first; ``trim=1`` then calls glibc's ``malloc_trim(0)``;
- ``census=1`` counts live objects by type (a leak shows there; memory an allocator keeps does not);
- with ``bench/soak/run.py --diagnose``: ``arenas=base|diff`` lists objects in 1 MiB address regions
  the baseline did not use (a few of them pin a whole pymalloc arena), ``pymalloc=1`` adds pymalloc's
  arena totals and the RSS of each mapping, ``snapshot=NAME[&diff=BASE]`` compares tracemalloc
  snapshots when the server runs with ``SOAK_TRACEMALLOC=<frames>``.
"""

import asyncio
import ctypes
import ctypes.util
import gc
import os
import sys
import tracemalloc
from collections import Counter

import psutil

from bench.soak import pools

PROCESS = psutil.Process()
SNAPSHOTS: dict = {}  # tracemalloc snapshots by name
ARENA_REGIONS: set[int] = set()
if os.environ.get("SOAK_TRACEMALLOC"):
    tracemalloc.start(int(os.environ["SOAK_TRACEMALLOC"]))


def malloc_trim() -> bool | None:
    """glibc's ``malloc_trim(0)``; None when the C library has no such function."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    libc = ctypes.CDLL(libc_name)
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    return bool(trim(0))


def pymalloc_stats() -> dict[str, int]:
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


def all_objects() -> dict[int, object]:
    """GC-tracked objects and what they refer to directly (strings, bytes, ints are not tracked)."""
    found = {id(o): o for o in gc.get_objects()}
    for o in list(found.values()):
        for r in gc.get_referents(o):
            found.setdefault(id(r), r)
    return found


def arena_census(mode: str | None) -> dict | None:
    """``?arenas=base`` records which 1 MiB address regions hold objects; ``?arenas=diff`` then lists the
    objects living in regions the baseline did not use: few objects there pin whole pymalloc arenas."""
    if mode == "base":
        ARENA_REGIONS.clear()
        ARENA_REGIONS.update(addr >> 20 for addr in all_objects())
        return {"regions": len(ARENA_REGIONS)}
    if mode != "diff":
        return None
    by_region: dict[int, Counter] = {}
    for addr, o in all_objects().items():
        if addr >> 20 not in ARENA_REGIONS:
            by_region.setdefault(addr >> 20, Counter())[type(o).__name__] += 1
    types: Counter = Counter()
    for counts in by_region.values():
        types.update(counts)
    samples = [
        {"region": hex(region << 20), "objects": sum(c.values()), "types": c.most_common(6)}
        for region, c in sorted(by_region.items())[:: max(1, len(by_region) // 12)]
    ]
    found = {"new_regions": len(by_region), "objects": sum(types.values()), "types": types.most_common(30),
             "samples": samples, "examples": _examples(by_region)}
    if tracemalloc.is_tracing():  # where the objects in the new regions were allocated (the pins' origins)
        sites: Counter = Counter()
        regions_of: dict[str, set] = {}
        for addr, o in all_objects().items():
            if addr >> 20 in ARENA_REGIONS:
                continue
            tb = tracemalloc.get_object_traceback(o)
            if tb is None:
                where = f"(untraced) {type(o).__name__}"
            else:
                where = " <- ".join(f"{pools.portable(f.filename)}:{f.lineno}" for f in reversed(tb))
            sites[where] += 1
            regions_of.setdefault(where, set()).add(addr >> 20)
        found["sites"] = [{"objects": n, "regions": len(regions_of[w]), "where": w} for w, n in sites.most_common(40)]
    return found


def _examples(by_region: dict[int, Counter], per_type: int = 4) -> list[dict]:
    """A few objects of each kind found in the new regions, with what refers to them (who keeps them)."""
    seen: Counter = Counter()
    out = []
    for addr, o in all_objects().items():
        if addr >> 20 not in by_region or addr >> 20 in ARENA_REGIONS:
            continue
        name = type(o).__name__
        if seen[name] >= per_type:
            continue
        seen[name] += 1
        text = pools.safe_repr(o, 120)
        holders = []
        for ref in gc.get_referrers(o)[:4]:
            if type(ref).__name__ in ("frame", "list") and len(holders) > 1:
                continue
            desc = type(ref).__name__
            if isinstance(ref, dict):
                keys = [k for k, v in list(ref.items())[:2000] if v is o][:2]
                desc += f" key={keys!r}"[:100]
            holders.append(desc)
        out.append({"type": name, "region": hex(addr >> 20 << 20), "repr": text, "held_by": holders})
    return out


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def glibc_heap() -> dict[str, int] | None:
    """glibc's ``mallinfo2()``: bytes in use (``uordblks``), free but kept (``fordblks``), mmapped (``hblkhd``).

    With ``PYTHONMALLOC=malloc`` every Python object is in these numbers, so they tell memory still
    in use from free memory glibc cannot give back (fragmentation).
    """
    libc_name = ctypes.util.find_library("c")
    mallinfo2 = getattr(ctypes.CDLL(libc_name), "mallinfo2", None) if libc_name else None
    if mallinfo2 is None:
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return {"in_use": info.uordblks + info.hblkhd, "free_kept": info.fordblks, "mmapped": info.hblkhd,
            "heap": info.arena}


def rss_by_mapping() -> dict[str, int]:
    """Resident bytes per mapping kind from ``/proc/self/smaps``: ``[heap]``, anonymous, each file."""
    totals: Counter = Counter()
    name = "?"
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if not fields[0].endswith(":"):  # a mapping's header line: address range, ..., path
                # a file by its name alone: the results keep no path of the machine they ran on
                name = os.path.basename(fields[5]) or fields[5] if len(fields) > 5 else "[anon]"
            elif fields[0] == "Rss:":
                totals[name] += int(fields[1]) * 1024
    return dict(totals)


def survivors(query) -> list[dict] | None:
    """``snapshot=NAME`` keeps a tracemalloc snapshot; with ``diff=BASE`` also lists what NAME holds that
    BASE did not: the allocation sites of blocks that outlived their connections."""
    if not tracemalloc.is_tracing() or not query.get("snapshot"):
        return None
    snap = SNAPSHOTS[query["snapshot"]] = tracemalloc.take_snapshot()
    base = SNAPSHOTS.get(query.get("diff", ""))
    if base is None:
        return None
    return [
        {"size_diff": st.size_diff, "count_diff": st.count_diff, "where": st.traceback.format()[-6:]}
        for st in snap.compare_to(base, "traceback")[:25]
    ]


def _pools(mode: str | None) -> dict | None:
    """``arenas=base|diff`` also walks pymalloc's pools (``bench/soak/pools.py``) when tracemalloc is off."""
    if mode not in ("base", "diff") or tracemalloc.is_tracing() or os.environ.get("PYTHONMALLOC"):
        return None

    return pools.record_baseline() if mode == "base" else pools.diff()


def process_stats(query) -> dict:
    """The process part of ``/stats``; ``query`` is a mapping of the flags in the module docstring."""
    collected = gc.collect() if query.get("gc") else None
    trimmed = malloc_trim() if query.get("trim") else None
    rss = PROCESS.memory_info().rss  # before the censuses below, which allocate
    census = None
    if query.get("census"):
        counts = Counter(type(o).__name__ for o in gc.get_objects())
        census = {"objects": sum(counts.values()), "top": counts.most_common(15)}
    diagnose = bool(query.get("pymalloc"))
    return {
        "tasks": len(asyncio.all_tasks()),
        "rss": rss,
        "gc_collected": collected,
        "allocated_blocks": sys.getallocatedblocks(),  # Python objects and buffers alive
        "census": census,
        # pymalloc's pools first: what the censuses allocate lands in the free blocks they count
        "pools": _pools(query.get("arenas")),
        "pinning": arena_census(query.get("arenas")),  # before survivors(): a snapshot allocates a lot
        "survivors": survivors(query),
        "pymalloc": pymalloc_stats() if diagnose else None,
        "rss_by_mapping": rss_by_mapping() if diagnose else None,
        "glibc": glibc_heap(),
        "malloc_trim": trimmed,
        "num_fds": PROCESS.num_fds(),
        "threads": PROCESS.num_threads(),
    }
