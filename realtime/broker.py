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
