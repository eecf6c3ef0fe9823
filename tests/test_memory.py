"""realtime.memory: the heap is trimmed after a big drop in open connections, and only then."""

import asyncio

import pytest

from realtime import memory
from tests.waiting import await_until


@pytest.fixture
def trims(monkeypatch):
    """Counts release_memory() calls; small thresholds so a test needs few connections."""
    calls = []
    monkeypatch.setattr(memory, "release_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(memory, "MIN_DROP", 10)
    monkeypatch.setattr(memory, "DELAY", 0.05)
    monkeypatch.setattr(memory, "MIN_INTERVAL", 0.3)
    return calls


def wave(counter, up, down):
    for _ in range(up):
        counter.opened()
    for _ in range(down):
        counter.closed()


async def trimmed(trims, count):
    """Wait until the trim's thread has run ``count`` times."""
    await await_until(lambda: len(trims) >= count, message=f"{count} trim(s) of the heap")


async def quiet():
    await asyncio.sleep(0.2)  # time under test: past DELAY, and no trim may have run


async def test_a_big_drop_trims_once(trims):
    counter = memory.OpenConnections()
    wave(counter, 30, 20)
    await trimmed(trims, 1)
    assert (counter.count, counter.trims, len(trims)) == (10, 1, 1)
    wave(counter, 0, 5)  # the peak was reset at the trim: 5 fewer is no new wave
    await quiet()
    assert len(trims) == 1


async def test_a_small_drop_or_half_still_open_does_not_trim(trims):
    counter = memory.OpenConnections()
    wave(counter, 30, 9)  # fewer than MIN_DROP left
    await quiet()
    wave(counter, 0, 5)  # 14 left of 30: more than half still open
    await quiet()
    assert counter.count == 16 and trims == []


async def test_trims_are_at_least_min_interval_apart(trims, monkeypatch):
    # Room for the first trim's gc.collect(), which runs on the loop after the interval has started.
    monkeypatch.setattr(memory, "MIN_INTERVAL", 3.0)
    counter = memory.OpenConnections()
    wave(counter, 20, 20)
    await trimmed(trims, 1)
    wave(counter, 20, 20)  # a second wave right away waits for the interval
    await quiet()
    assert len(trims) == 1
    await trimmed(trims, 2)
    assert len(trims) == 2


async def test_off_by_setting(trims, settings):
    settings.REALTIME = {"RELEASE_MEMORY": False}
    counter = memory.OpenConnections()
    wave(counter, 20, 20)
    await quiet()
    assert trims == []


def test_release_memory_calls_the_c_library():
    # glibc on these machines: malloc_trim exists and returns 0 or 1.
    assert memory._malloc_trim() is not None
    assert memory.release_memory() in (True, False)


async def test_the_trim_waits_until_the_wave_has_left(trims):
    counter = memory.OpenConnections()
    wave(counter, 40, 0)
    for _ in range(30):  # a disconnect every 0.02 s, more often than DELAY (0.05 s)
        counter.closed()
        await asyncio.sleep(0.02)  # time under test: the pace of the departures
    assert trims == []
    await trimmed(trims, 1)
    assert len(trims) == 1


def test_the_trim_lookup_is_made_at_import():
    # Made during a wave, the CDLL and its function objects would live on among the closed
    # connections' freed blocks and keep their pymalloc arenas resident.
    assert memory._malloc_trim() is memory._TRIM is not None


def test_clearing_the_type_cache_frees_the_names_it_holds():
    import gc
    import sys

    classes = [type(f"C{i}", (), {"value": i}) for i in range(2000)]
    gc.collect()
    before = sys.getallocatedblocks()
    # A new str per lookup, as C code looking up a C string makes. All alive at once: the cache is
    # indexed by the name's address, and a str freed after each lookup would give the next one the
    # same address (the same slot), so how many the cache kept would hang on the allocator's state.
    names = ["".join(["val", "ue"]) for _ in classes]
    for cls, name in zip(classes, names, strict=True):
        getattr(cls, name)
    del names
    gc.collect()
    kept = sys.getallocatedblocks() - before
    assert kept > 100  # the cache holds on to many of those copies of "value"
    assert memory.clear_internal_caches() is True
    gc.collect()
    assert sys.getallocatedblocks() - before < kept - 100


async def test_a_trim_clears_the_type_cache(trims, monkeypatch):
    cleared = []
    monkeypatch.setattr(memory, "clear_internal_caches", lambda: cleared.append(1) or True)
    counter = memory.OpenConnections()
    wave(counter, 20, 20)
    await trimmed(trims, 1)
    assert (len(cleared), len(trims)) == (1, 1)
