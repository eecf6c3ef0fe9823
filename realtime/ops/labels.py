"""Bounded label values for channel names, so a burst of distinct names cannot blow up a scrape.

The first ``REALTIME["METRICS_MAX_CHANNELS"]`` channel names of the process keep a label of their
own, for good (a label never changes, so counters stay monotonic). Later names fold into their
topic pattern, the part before the first ``:`` plus ``:*`` (``room:42`` → ``room:*``), of which
there are at most as many again, and then into ``other``.
"""

from __future__ import annotations

from ..conf import setting

OTHER = "other"


class ChannelLabels:
    """Assigns each channel name its label, once."""

    def __init__(self) -> None:
        self._labels: dict[str, str] = {}
        self._own = 0
        self._patterns: set[str] = set()
        self._limit: int | None = None

    def label(self, name: str) -> str:
        """The label for channel ``name``."""
        limit = int(setting("METRICS_MAX_CHANNELS"))
        if limit != self._limit:  # a new limit (tests change it): start over
            self.__init__()
            self._limit = limit
        label = self._labels.get(name)
        if label is None:
            label = self._labels[name] = self._assign(name, limit)
        return label

    def _assign(self, name: str, limit: int) -> str:
        if self._own < limit:
            self._own += 1
            return name
        prefix, colon, _ = name.partition(":")
        if not colon or not prefix:
            return OTHER
        pattern = f"{prefix}:*"
        if pattern in self._patterns:
            return pattern
        if len(self._patterns) < limit:
            self._patterns.add(pattern)
            return pattern
        return OTHER


channel_labels = ChannelLabels()
