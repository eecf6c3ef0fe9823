"""One log line per change of the broker's (Redis's) state, instead of a traceback per message."""

from __future__ import annotations

import logging

logger = logging.getLogger("realtime.broker")


class BrokerState:
    """Tracks whether the cross-process broker answers, and logs only the transitions."""

    def __init__(self) -> None:
        self.up = True
        self.failures = 0

    def failed(self, operation: str, error: BaseException) -> None:
        self.failures += 1
        if self.up:
            self.up = False
            logger.error(
                "Redis unreachable (%s failed: %s); local delivery continues, cross-process delivery "
                "and history are paused until it returns", operation, error or type(error).__name__,
            )

    def recovered(self) -> None:
        if not self.up:
            self.up = True
            logger.warning("Redis reachable again after %d failed operation(s); fan-out resumed", self.failures)
            self.failures = 0


broker_state = BrokerState()


class BrokerErrorFilter(logging.Filter):
    """Turns channels-redis's traceback-per-second while Redis is away into one state change."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            broker_state.failed("receive", record.exc_info[1])
            return False
        return True


def quiet_channels_redis() -> None:
    """Install the filter on channels-redis's loggers (idempotent)."""
    for name in ("channels_redis.pubsub", "channels_redis.core"):
        target = logging.getLogger(name)
        if not any(isinstance(f, BrokerErrorFilter) for f in target.filters):
            target.addFilter(BrokerErrorFilter())
