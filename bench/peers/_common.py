"""Helpers shared by the peer servers (not a server itself).

Every peer publishes through its *own* broadcast mechanism; this module only
holds the bits that must be identical everywhere: the message shape, the query
parsing of ``/publish`` and the pacing loop.
"""

import asyncio
import json
import os
import time
from urllib.parse import parse_qs


def publish_params(query: str | bytes) -> tuple[int, float, int]:
    """Parse ``count``, ``rate`` and ``size`` from a ``/publish`` query string."""
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    q = parse_qs(query)
    count = int(q.get("count", ["1"])[0])
    rate = float(q.get("rate", ["0"])[0])
    size = int(q.get("size", ["0"])[0])
    return count, rate, size


def make_message(seq: int, size: int) -> dict:
    """The message every peer publishes; ``ts`` is taken at publish time."""
    return {"seq": seq, "ts": time.time(), "pad": "x" * size}


def encode(message: dict) -> str:
    return json.dumps(message)


async def publish_loop(count: int, rate: float, size: int, publish_one) -> None:
    """Call ``await publish_one(message_dict)`` ``count`` times.

    rate > 0: paced at ``rate`` messages/s against an absolute schedule.
    rate == 0: flat out, yielding to the event loop once per message so the
    server's own I/O can make progress (the same for every peer).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    for seq in range(count):
        if rate > 0:
            delay = start + seq / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        await publish_one(make_message(seq, size))
        if rate <= 0 and YIELD_FLAT_OUT:
            await asyncio.sleep(0)


# Experiment knob: BENCH_FLAT_OUT_YIELD=0 publishes flat out without yielding between messages.
YIELD_FLAT_OUT = os.environ.get("BENCH_FLAT_OUT_YIELD", "1") != "0"


# Strong references to the background publish tasks (asyncio keeps only weak ones).
TASKS: set = set()


def spawn(coro) -> None:
    task = asyncio.ensure_future(coro)
    TASKS.add(task)
    task.add_done_callback(TASKS.discard)
