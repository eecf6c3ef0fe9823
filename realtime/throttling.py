"""Per-connection inbound message rate limits, as throttle classes in DRF's style.

``throttle_classes = [MessageRateThrottle]`` on a WebSocketView (the default, at
``REALTIME["MESSAGE_RATE"]``); a connection over its rate is closed with 1008. Rates read
``"20/s"``, ``"100/m"``, ``"1000/h"``. Each throttle is a token bucket: bursts up to the rate's
count are allowed, then messages are admitted at the average rate.
"""

from __future__ import annotations

import time
from typing import Any

from .conf import setting

_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_rate(rate: str) -> tuple[int, float]:
    """``"100/s"`` → ``(100, 1.0)``."""
    try:
        count, period = rate.split("/")
        return int(count), _PERIODS[period.strip()[0].lower()]
    except (ValueError, KeyError, IndexError, AttributeError):
        raise ValueError(f"A rate looks like '20/s', '100/m' or '1000/h', not {rate!r}") from None


class MessageRateThrottle:
    """Allows ``rate`` inbound messages per connection."""

    rate: str | None = None  # None: REALTIME[setting_name]
    setting_name = "MESSAGE_RATE"
    message = "Message rate exceeded"

    def __init__(self) -> None:
        rate = self.rate if self.rate is not None else setting(self.setting_name)
        self.enabled = rate is not None
        if self.enabled:
            self.capacity, period = parse_rate(rate)
            self.refill = self.capacity / period
            self.tokens = float(self.capacity)
            self.stamp = time.monotonic()

    def allow_message(self, ws: Any, view: Any) -> bool:
        if not self.enabled:
            return True
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.refill)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def retry_after(self) -> float:
        """Seconds until the next message would be allowed (0 when one would be now)."""
        if not self.enabled:
            return 0.0
        return max(0.0, (1 - self.tokens) / self.refill)


class PublishRateThrottle(MessageRateThrottle):
    """Allows ``REALTIME["PUBLISH_API_RATE"]`` HTTP publish requests per API key, in this process."""

    setting_name = "PUBLISH_API_RATE"
    message = "Publish rate exceeded"
