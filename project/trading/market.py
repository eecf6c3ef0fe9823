"""The market simulator: one for the whole deployment, however many processes serve it.

It is started lazily by the first tick subscriber of a process and stopped when that process has
no tick subscriber left. With ``REDIS_URL`` set, many processes may want it at once, so it runs only
in the process that holds a Redis lock (``SET key token NX PX ttl``, renewed every ``RENEW_EVERY``
seconds by a compare-and-expire script). The others wait for the lock, retrying every second, and
receive the ticks through the channel layer like any other subscriber: if the simulating process
stops or dies, one of them takes over within ``LOCK_TTL_MS``. The last prices live in Redis too, so
a new leader continues the same price paths and orders are priced alike on every process.

Without ``REDIS_URL`` (one process) there is no lock and the prices live in memory.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import math
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.utils.asyncio import async_unsafe

from realtime.pubsub.broker import BrokerUnavailable, is_unreachable
from realtime.pubsub.redis import async_client, redis_url, sync_client

from .channels import ticks

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Symbol:
    name: str
    start: float
    #: Annualised volatility, as the synthetic "Volatility 10/50/100" indices are named.
    volatility: float
    decimals: int


SYMBOLS = {
    s.name: s
    for s in (
        Symbol("R_10", 6000.0, 0.10, 3),
        Symbol("R_50", 250.0, 0.50, 4),
        Symbol("R_100", 1500.0, 1.00, 2),
    )
}

#: Seconds between two rounds of ticks (one tick per symbol per round).
TICK_INTERVAL = 0.5
LOCK_KEY = "realtime:trading:simulator"
PRICES_KEY = "realtime:trading:prices"
LOCK_TTL_MS = 6000
RENEW_EVERY = 2.0
RETRY_EVERY = 1.0
#: A second of simulated time per tick is 1/31,536,000 of a year: volatility scales by its root.
_YEAR_SECONDS = 365 * 24 * 3600

# KEYS[1] lock, ARGV[1] token, ARGV[2] ttl: extend the lock only if it is still ours.
RENEW_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS[1] lock, ARGV[1] token: delete the lock only if it is still ours.
RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def next_price(symbol: Symbol, price: float, rng: random.Random, dt: float = TICK_INTERVAL) -> float:
    """One step of geometric Brownian motion (zero drift), rounded to the symbol's decimals."""
    sigma = symbol.volatility * math.sqrt(dt / _YEAR_SECONDS) * 40  # x40: visible moves for a demo
    return round(price * math.exp(sigma * rng.gauss(0.0, 1.0) - sigma * sigma / 2), symbol.decimals)


class MarketSimulator:
    """Reference-counted by the tick subscribers of this process; see the module docstring."""

    def __init__(self) -> None:
        self.subscribers = 0
        self.prices: dict[str, float] = {name: s.start for name, s in SYMBOLS.items()}
        self.leader = False
        #: Identifies this simulator's ticks (a new one on every takeover), so clients and tests
        #: can tell that a single simulator is running.
        self.instance = ""
        self._task: asyncio.Task[None] | None = None
        self._token = uuid.uuid4().hex
        self._seq = 0
        self._rng = random.Random()
        atexit.register(self._release_at_exit)

    # -- reference counting -----------------------------------------------------------------

    def acquire(self) -> None:
        """A tick subscriber arrived: make sure this process runs (or waits to run) the simulator."""
        self.subscribers += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="market-simulator")

    def release(self) -> None:
        """A tick subscriber left: stop when none is left in this process."""
        self.subscribers = max(0, self.subscribers - 1)
        if self.subscribers == 0 and self._task is not None:
            self._task.cancel()
            self._task = None

    @contextlib.asynccontextmanager
    async def running(self):
        self.acquire()
        try:
            yield self
        finally:
            self.release()

    # -- the simulation ---------------------------------------------------------------------

    async def _run(self) -> None:
        url = redis_url()
        if url is None:
            await self._simulate(None)
            return
        client = async_client(url)
        try:
            while True:
                try:
                    if await client.set(LOCK_KEY, self._token, nx=True, px=LOCK_TTL_MS):
                        await self._simulate(client)
                except Exception as error:  # Redis away or restarting: wait and try again
                    logger.warning("Market simulator: %s; retrying", error)
                    self.leader = False
                await asyncio.sleep(RETRY_EVERY)
        finally:
            self.leader = False
            with contextlib.suppress(Exception):
                await asyncio.shield(client.eval(RELEASE_SCRIPT, 1, LOCK_KEY, self._token))
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _simulate(self, client) -> None:
        """Publish ticks until cancelled or, with Redis, until the lock is lost."""
        self.leader = True
        self.instance = uuid.uuid4().hex[:8]
        if client is not None:
            stored = {k.decode(): v.decode() for k, v in (await client.hgetall(PRICES_KEY)).items()}
            self.prices.update({k: float(v) for k, v in stored.items() if k in SYMBOLS})
            self._seq = max(self._seq, int(stored.get("seq", 0)))  # one sequence across takeovers
        logger.info("Market simulator %s started", self.instance)
        renew_at = time.monotonic() + RENEW_EVERY
        try:
            while True:
                if client is not None and time.monotonic() >= renew_at:
                    if not await client.eval(RENEW_SCRIPT, 1, LOCK_KEY, self._token, LOCK_TTL_MS):
                        logger.warning("Market simulator %s lost its lock; another process runs it", self.instance)
                        return
                    renew_at = time.monotonic() + RENEW_EVERY
                await self._round(client)
                await asyncio.sleep(TICK_INTERVAL)
        finally:
            self.leader = False
            logger.info("Market simulator %s stopped", self.instance)

    async def _round(self, client) -> None:
        self._seq += 1
        now = time.time()
        for name, symbol in SYMBOLS.items():
            price = self.prices[name] = next_price(symbol, self.prices[name], self._rng)
            await ticks.publish(
                {"symbol": name, "price": price, "epoch": round(now, 3), "seq": self._seq, "sim": self.instance}
            )
        if client is not None:
            await client.hset(PRICES_KEY, mapping={"seq": self._seq, **{k: repr(v) for k, v in self.prices.items()}})

    def _release_at_exit(self) -> None:
        """daphne stops its loop without cancelling tasks: free the lock so a survivor takes over now."""
        url = redis_url() if self.leader else None
        if url is None:
            return
        with contextlib.suppress(Exception):
            sync_client(url).eval(RELEASE_SCRIPT, 1, LOCK_KEY, self._token)


simulator = MarketSimulator()


_price_clients: dict[str, Any] = {}


def _price_client(url: str) -> Any:
    """A pooled sync client per URL (one server, a Cluster or a Sentinel master): bounded waits."""
    client = _price_clients.get(url)
    if client is None:
        client = _price_clients[url] = sync_client(url)
    return client


@async_unsafe("current_price() blocks on Redis: call it from sync code (Django runs sync views in a thread).")
def current_price(symbol: str) -> float:
    """The latest simulated price of ``symbol``, as every process sees it; BrokerUnavailable if Redis is away."""
    url = redis_url()
    if url is None:
        return simulator.prices[symbol]
    try:
        stored = _price_client(url).hget(PRICES_KEY, symbol)
    except Exception as error:
        if not is_unreachable(error):
            raise
        raise BrokerUnavailable(f"Redis is unreachable (price lookup failed: {error})") from error
    return float(stored) if stored is not None else SYMBOLS[symbol].start
