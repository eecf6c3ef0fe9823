"""The soak's in-server publisher, shared by the realtime app and its peer.

``start(count, rate, publish_one)`` returns at once; a task publishes ``count`` messages
``{"seq": i, "ts": time.time()}`` at ``rate`` per second (0: flat out, yielding once per message)
through ``publish_one(message) -> deliveries``, and keeps ``STATE`` for ``/stats``.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable

STATE = {"published": 0, "delivered": 0, "target": 0, "running": False, "started": None, "finished": None}
_TASKS: set = set()  # strong references: asyncio keeps only weak ones


async def _run(count: int, rate: float, publish_one: Callable[[dict], Awaitable[int]]) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    STATE.update(target=STATE["target"] + count, running=True, started=time.time())
    try:
        for seq in range(count):
            if rate > 0:
                delay = start + seq / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            STATE["delivered"] += await publish_one({"seq": seq, "ts": time.time()})
            STATE["published"] += 1
            if rate <= 0:
                await asyncio.sleep(0)
    finally:
        STATE.update(running=False, finished=time.time())


def start(count: int, rate: float, publish_one: Callable[[dict], Awaitable[int]]) -> None:
    task = asyncio.ensure_future(_run(count, rate, publish_one))
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
