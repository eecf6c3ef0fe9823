"""The process's operational counters: plain ints and small histograms, cheap to bump, read on demand.

Nothing here needs ``prometheus_client``: the admin page and ``realtime_status`` read the same
counters. Counting happens once per connection, per publish or per unsubscribe; the only
per-delivery work is an attribute increment on the connection (``ws.sent``).
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .connections import ConnectionRecord

#: Connection durations, in seconds: from a refused handshake to a day-long socket.
DURATION_BUCKETS = (0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0, 86400.0)
#: Publish-to-send latency, in seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Counts of observations per bucket (``le`` bounds, as Prometheus has them), their sum and count."""

    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

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


@dataclass
class EndpointTotals:
    """What the connections of one endpoint that have *ended* added up to."""

    connections: int = 0
    sent: int = 0
    received: int = 0
    dropped: int = 0
    duration: Histogram = field(default_factory=lambda: Histogram(DURATION_BUCKETS))


class ProcessStats:
    """Every counter of this process; one instance, :data:`stats`."""

    def __init__(self) -> None:
        self.started = time.time()
        #: Open connections (handshakes included), insertion-ordered.
        self.live: dict[ConnectionRecord, None] = {}
        #: Ended connections, by (endpoint, protocol).
        self.ended: defaultdict[tuple[str, str], EndpointTotals] = defaultdict(EndpointTotals)
        #: Ended connections, by (protocol, close code or SSE end, who closed).
        self.closed: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        #: Refused handshakes, by (protocol, close code or HTTP status).
        self.refused: defaultdict[tuple[str, str], int] = defaultdict(int)
        #: Connections ended because their client did not read, by protocol.
        self.slow_consumers: defaultdict[str, int] = defaultdict(int)
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
