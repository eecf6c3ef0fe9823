"""The process's operational counters: plain ints and small histograms, cheap to bump, read on demand.

Nothing here needs ``prometheus_client``: the admin page and ``realtime_status`` read the same
counters. Counting happens once per connection, per publish or per unsubscribe; the only
per-delivery work is an attribute increment on the connection (``ws.sent``).
"""

from __future__ import annotations

import bisect
import time
from array import array
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

#: Connection durations, in seconds: from a refused handshake to a day-long socket.
DURATION_BUCKETS = (0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0, 86400.0)
#: Publish-to-send latency, in seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Slot:
    """A number kept in a C array of its object (``store``: the array's attribute), read and set as an attribute.

    A counter bumped at every connection's end would get a new int (or float) object each time,
    and the last one lives on: made at the end of a wave of disconnects, it lands among the freed
    blocks of the closed connections and keeps their 1 MiB pymalloc arena from going back to the
    OS (``bench/soak``). Stored in an array, what lives on is the array, made with its object; a
    value read is made when read and freed after.
    """

    __slots__ = ("index", "store")

    def __init__(self, index: int, store: str = "_ints") -> None:
        self.index = index
        self.store = store

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        return getattr(obj, self.store)[self.index]

    def __set__(self, obj: Any, value: Any) -> None:
        getattr(obj, self.store)[self.index] = value


def int_slots(count: int) -> array:
    """Zeroed storage for ``count`` int Slots (64-bit)."""
    return array("q", bytes(8 * count))


class Tally(Mapping):
    """Counts by key, read and bumped as a ``defaultdict(int)`` (``tally[key] += 1``), kept in a C array.

    The keys (a close code, a protocol) are few and come back; a new count stores no new object.
    """

    __slots__ = ("_ints", "_where")

    def __init__(self) -> None:
        self._where: dict[Any, int] = {}
        self._ints = int_slots(0)

    def __getitem__(self, key: Any) -> int:
        where = self._where.get(key)
        return 0 if where is None else self._ints[where]

    def __setitem__(self, key: Any, value: int) -> None:
        where = self._where.get(key)
        if where is None:
            where = self._where[key] = len(self._ints)
            self._ints.append(0)
        self._ints[where] = value

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._where))

    def __len__(self) -> int:
        return len(self._where)

    def __repr__(self) -> str:
        return f"Tally({dict(self.items())!r})"


class Histogram:
    """Counts of observations per bucket (``le`` bounds, as Prometheus has them), their sum and count."""

    __slots__ = ("_ints", "_sum", "buckets", "counts")

    count = Slot(0)
    sum = Slot(0, "_sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = int_slots(len(buckets) + 1)  # an array too: no int object per bucket bump
        self._ints = int_slots(1)
        self._sum = array("d", [0.0])

    def observe(self, value: float) -> None:
        """Add one observation."""
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count of observations <= le)`` pairs, ending with ``+Inf``."""
        total, pairs = 0, []
        for bound, count in zip((*self.buckets, float("inf")), list(self.counts), strict=True):
            total += count
            pairs.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return pairs

    def quantile(self, q: float) -> float | None:
        """An upper bound of the ``q`` quantile (the bucket it falls in); None without observations or past the last."""
        if not self.count:
            return None
        wanted, total = q * self.count, 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            total += count
            if total >= wanted:
                return bound
        return None


class EndpointTotals:
    """What the connections of one endpoint that have *ended* added up to."""

    __slots__ = ("_ints", "duration")

    connections = Slot(0)
    sent = Slot(1)
    received = Slot(2)
    dropped = Slot(3)

    def __init__(self) -> None:
        self._ints = int_slots(4)
        self.duration = Histogram(DURATION_BUCKETS)

    def __repr__(self) -> str:
        return (f"EndpointTotals(connections={self.connections}, sent={self.sent}, received={self.received}, "
                f"dropped={self.dropped})")


class ProcessStats:
    """Every counter of this process; one instance, :data:`stats`."""

    def __init__(self) -> None:
        self.started = time.time()
        #: Ended connections, by (endpoint, protocol).
        self.ended: defaultdict[tuple[str, str], EndpointTotals] = defaultdict(EndpointTotals)
        #: Ended connections, by (protocol, close code or SSE end, who closed).
        self.closed: Tally = Tally()  # tuple[str, str, str] -> int
        #: Refused handshakes, by (protocol, close code or HTTP status).
        self.refused: Tally = Tally()  # tuple[str, str] -> int
        #: Connections ended because their client did not read, by protocol.
        self.slow_consumers: Tally = Tally()  # str -> int
        #: ``Gap(n)`` reported to subscribers (``subscribe(gaps=True)``), and the messages they missed.
        self.gaps = 0
        self.gap_messages = 0
        #: Subscriptions resumed from history, the messages replayed, and those history could not reach back for.
        self.replays = 0
        self.replayed = 0
        self.resets = 0
        #: Publish-to-send latency, on the sampled connections (``METRICS_LATENCY_SAMPLE``).
        self.latency = Histogram(LATENCY_BUCKETS)

    def gap(self, missed: int | None) -> None:
        """A subscriber was told it missed ``missed`` messages (None: history could not reach back)."""
        if missed is not None:
            self.gaps += 1
            self.gap_messages += missed

    def resumed(self, replayed: int, recovered: bool) -> None:
        """A subscription resumed from history."""
        self.replays += 1
        self.replayed += replayed
        if not recovered:
            self.resets += 1

    def refuse(self, protocol: str, code: int | str) -> None:
        """A handshake or SSE request was refused with ``code`` (close code or HTTP status)."""
        self.refused[(protocol, str(code))] += 1


stats = ProcessStats()
