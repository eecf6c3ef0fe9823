"""What keeps pymalloc arenas alive: every live block in arenas the baseline did not use.

A 1 MiB pymalloc arena goes back to the OS only when all of its blocks are free, so after a wave
of connections a few surviving blocks keep whole arenas resident. ``gc.get_objects()`` cannot show
them all: dict key tables, list item arrays and objects held only by untracked dicts are no GC
objects. This walks pymalloc's own pool headers (CPython 3.12-3.14, 64-bit, default build: 16 KiB
pools, 1 MiB arenas, 48-byte pool header) in the process's anonymous mappings, lists the live
blocks of each arena, and names them: a Python object (its type, a repr and what refers to it),
a dict's key table or a list's item array (whose dict or list), or raw bytes.

Diagnostics only (``bench/soak/run.py --diagnose``): it reads raw memory with ctypes, and runs
without tracemalloc (whose hooks hide pymalloc).
"""

from __future__ import annotations

import ctypes
import gc
import re
import struct
import sys
import sysconfig
from array import array
from collections import Counter
from pathlib import Path

POOL_SIZE = 1 << 14
HEADER = 48
_arena_base: set[int] = set()  # arena indices in use at the baseline
_HEADER = struct.Struct("<QQQQIIII")
_WORD = struct.Struct("<Q")


def _anon_ranges() -> list[tuple[int, int]]:
    """Readable anonymous mappings (pymalloc mmaps its arenas) and the brk heap."""
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if "r" in fields[1] and (len(fields) < 6 or fields[5] == "[heap]"):
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((lo, hi))
    return ranges


def pools() -> array:
    """(address, arena index, block size, next offset) of every pool in use, flat in one array.

    An array, not Python ints in lists: what the walk keeps must not land in the free blocks it
    is counting (its buffer outgrows pymalloc's 512 bytes at once and goes to malloc).
    """
    found = array("Q", bytes(8 * 4 * 8192))
    n = 0
    for lo, hi in _anon_ranges():
        addr = (lo + POOL_SIZE - 1) & ~(POOL_SIZE - 1)
        while addr + POOL_SIZE <= hi:
            count, freeblock, _nxt, _prv, arenaindex, szidx, nextoffset, maxnext = _HEADER.unpack(
                ctypes.string_at(addr, HEADER))
            size = (szidx + 1) * 16
            if (count and szidx < 32 and maxnext == POOL_SIZE - size and HEADER <= nextoffset <= maxnext + size
                    and count <= (POOL_SIZE - HEADER) // size and arenaindex < 1 << 20
                    and (freeblock == 0 or addr < freeblock < addr + POOL_SIZE)):
                if n + 4 > len(found):
                    found.extend(bytes(8 * len(found)))
                found[n], found[n + 1], found[n + 2], found[n + 3] = addr, arenaindex, size, nextoffset
                n += 4
            addr += POOL_SIZE
    del found[n:]
    return found


def _live_blocks(pool_list: array, skip: set[int]) -> array:
    """(block address, arena index, block size) of every allocated block in the pools whose arena is not in ``skip``."""
    out = array("Q", bytes(8 * 3 * 65536))
    n = 0
    free = bytearray(POOL_SIZE // 16)
    for i in range(0, len(pool_list), 4):
        addr, arena, size, nextoffset = pool_list[i], pool_list[i + 1], pool_list[i + 2], pool_list[i + 3]
        if arena in skip:
            continue
        raw = ctypes.string_at(addr, POOL_SIZE)
        free[:] = bytes(len(free))
        block = _WORD.unpack_from(raw, 8)[0]  # pool->freeblock, then each free block's first word
        while block and addr <= block < addr + POOL_SIZE and not free[(block - addr) // 16]:
            free[(block - addr) // 16] = 1
            block = _WORD.unpack_from(raw, block - addr)[0]
        for off in range(HEADER, nextoffset, size):
            if not free[off // 16]:
                if n + 3 > len(out):
                    out.extend(bytes(8 * len(out)))
                out[n], out[n + 1], out[n + 2] = addr + off, arena, size
                n += 3
    del out[n:]
    return out


def record_baseline() -> dict:
    found = pools()
    _arena_base.clear()
    _arena_base.update(found[i] for i in range(1, len(found), 4))
    return {"arenas_with_live_blocks": len(_arena_base)}


def _owners() -> tuple[dict[int, object], dict[int, object], dict[int, str]]:
    """Objects by address (GC objects and their referents), owners of dict key tables and list arrays, type names."""
    objects = {id(o): o for o in gc.get_objects()}
    for o in list(objects.values()):
        for r in gc.get_referents(o):
            objects.setdefault(id(r), r)
    for d in list(objects.values()):  # untracked dicts' values: ints, strings, floats
        if type(d) is dict:
            for k, v in list(d.items()):
                objects.setdefault(id(k), k)
                objects.setdefault(id(v), v)
    tables: dict[int, object] = {}
    types: dict[int, str] = {}
    for o in list(objects.values()):
        t = type(o)
        types.setdefault(id(t), t.__name__)
        if isinstance(o, dict):
            keys, values = struct.unpack("<QQ", ctypes.string_at(id(o) + 32, 16))  # ma_keys, ma_values
            tables[keys] = o
            if values:
                tables[values] = o
        elif isinstance(o, list):
            tables[struct.unpack("<Q", ctypes.string_at(id(o) + 24, 8))[0]] = o  # ob_item
        elif isinstance(o, type):
            types.setdefault(id(o), o.__name__)
    return objects, tables, types


#: Where this machine keeps the code that reprs name (site-packages, the stdlib, this checkout):
#: cut from what the results record, so they hold no path of the machine they ran on.
_PREFIXES = re.compile("|".join(
    re.escape(path.rstrip("/") + "/")
    for path in sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["stdlib"],
                        str(Path(__file__).resolve().parents[2])}, key=len, reverse=True)
))


def portable(text: str) -> str:
    """``text`` with this machine's code locations cut to paths relative to them."""
    return _PREFIXES.sub("", text)


def safe_repr(o: object, limit: int) -> str:
    try:
        text = repr(o)
    except Exception as error:
        text = f"<repr failed: {error!r}>"
    return portable(text)[:limit]


def _describe(o: object) -> str:
    return f"{type(o).__name__} {safe_repr(o, 100)}"


def _holders(o: object) -> list[str]:
    out = []
    for ref in gc.get_referrers(o)[:6]:
        if type(ref).__name__ == "frame":
            continue
        desc = type(ref).__name__
        if isinstance(ref, dict):
            keys = [k for k, v in list(ref.items())[:5000] if v is o][:2]
            desc += f" key={keys!r}"[:100]
            owners = [type(x).__name__ for x in gc.get_referrers(ref)[:3] if type(x).__name__ != "frame"]
            desc += f" of {owners}"
        out.append(desc[:160])
    return out[:4]


def diff(limit: int = 60) -> dict:
    """The live blocks in arenas that had none at the baseline, named as well as can be."""
    current = pools()
    blocks = _live_blocks(current, _arena_base)  # first: what is named below allocates
    arenas_all = {current[i] for i in range(1, len(current), 4)}
    objects, tables, types = _owners()
    # What was alive during the walk and freed since (by _owners() itself) may have emptied its
    # arena, which pymalloc then unmaps: read only blocks whose pool is still in use.
    again = pools()
    in_use = {again[i] for i in range(0, len(again), 4)}
    kinds: Counter = Counter()
    lonely: dict[int, list[str]] = {}  # what each new arena holds, reported for the sparsest ones
    texts: Counter = Counter()  # what the str blocks say, live ("str") or not recognised ("raw")
    blocks_in: Counter = Counter()
    examples: list[dict] = []
    shown: Counter = Counter()
    for i in range(0, len(blocks), 3):
        block, arena, size = blocks[i], blocks[i + 1], blocks[i + 2]
        if block & ~(POOL_SIZE - 1) not in in_use:
            continue
        blocks_in[arena] += 1
        kind, detail = None, None
        if block in tables:
            owner = tables[block]
            kind = f"table of {type(owner).__name__}({len(owner)})"
            detail = owner
        else:
            for pre in (0, 16, 32):  # object, GC header + object, pre-header + GC header + object
                if pre + 16 > size:  # never read past the block: the pool may end a mapping
                    break
                refcnt, tp = struct.unpack("<QQ", ctypes.string_at(block + pre, 16))
                if tp in types and 0 < refcnt < 1 << 40:
                    kind = types[tp]
                    detail = objects.get(block + pre)
                    break
        if kind is None:
            kind = "raw"
        if size >= 48 and struct.unpack("<Q", ctypes.string_at(block + 8, 8))[0] == id(str):
            head = ctypes.string_at(block + 40, min(size - 40, 24))  # a compact ASCII str's characters
            texts[(kind, head.split(b"\0")[0].decode("latin-1"))] += 1
        kinds[kind] += 1
        if detail is not None:
            seen_here = f"{kind}: {_describe(detail)[:70]}"
        else:
            seen_here = f"{kind} {ctypes.string_at(block, 48).hex()}"
        lonely.setdefault(arena, []).append(seen_here)
        if shown[kind] < 3:
            shown[kind] += 1
            row = {"kind": kind, "arena": arena, "block": hex(block)}
            if detail is not None:
                row["what"] = _describe(detail)
                row["held_by"] = _holders(detail)
            else:
                row["bytes"] = ctypes.string_at(block, min(size, 48)).hex()
            examples.append(row)
    return {
        "arenas_with_live_blocks": len(arenas_all), "baseline_arenas": len(_arena_base),
        "new_arenas": len(blocks_in), "live_blocks_in_new_arenas": len(blocks) // 3,
        "blocks_per_new_arena": sorted(blocks_in.values()),
        "kinds": kinds.most_common(limit), "str_texts": [[k, t, n] for (k, t), n in texts.most_common(80)],
        "examples": examples[:200],
        "sparse_arenas": [{"arena": a, "blocks": what} for a, what in sorted(lonely.items(), key=lambda x: len(x[1]))
                          if len(what) <= 6],
        "python": sys.version.split()[0],
    }
