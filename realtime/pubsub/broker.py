"""The cross-process broker (Redis; NATS with ``NATS_URL``): its state, one log line per change, and the
error publishers see.

While Redis cannot be reached, ``Channel.publish`` raises :class:`BrokerUnavailable` and the
message reaches **no** subscriber, local ones included: a publish either reached every process
(and, on a history channel, got its id) or nobody, so a caller that retries never duplicates what
part of the deployment already showed. A stale pooled connection (Redis restarted since it was
last used) is reconnected and the command retried once before anything is reported.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger("realtime.broker")


class BrokerUnavailable(ConnectionError):
    """The broker (Redis) could not be reached: the message was published to nobody."""

    def __init__(self, detail: str, channel: str | None = None) -> None:
        super().__init__(detail)
        self.channel = channel


class BrokerState:
    """Tracks whether the cross-process broker answers, and logs only the transitions."""

    def __init__(self) -> None:
        self.up = True
        self.failures = 0
        #: Every failed operation since start (``failures`` restarts at each recovery).
        self.errors_total = 0
        #: The broker that failed last ("Redis", "NATS"), for the log lines.
        self.broker = "Redis"

    def failed(self, operation: str, error: BaseException, broker: str = "Redis") -> None:
        self.failures += 1
        self.errors_total += 1
        if self.up:
            self.up = False
            self.broker = broker
            logger.error(
                "%s unreachable (%s failed: %s); publishes raise BrokerUnavailable, cross-process delivery "
                "and history are paused until it returns", broker, operation, error or type(error).__name__,
            )

    def recovered(self) -> None:
        if not self.up:
            self.up = True
            logger.warning("%s reachable again after %d failed operation(s); fan-out resumed", self.broker,
                           self.failures)
            self.failures = 0


broker_state = BrokerState()


def _redis_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(errors that mean "unreachable", the subset worth one reconnect) among redis-py's exceptions."""
    try:
        from redis import exceptions as e
    except ImportError:  # a non-Redis layer: only the standard library's errors apply
        return (), ()
    unreachable = (e.ConnectionError, e.TimeoutError, e.ReadOnlyError, e.OutOfMemoryError, e.ClusterDownError)
    return unreachable, (e.ConnectionError,)


def is_unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the broker cannot take the message now (not that the message is bad)."""
    return isinstance(error, (OSError, *_redis_errors()[0]))


def is_broken_connection(error: BaseException) -> bool:
    """Whether ``error`` may come from a stale connection that a reconnect would fix."""
    return isinstance(error, (ConnectionError, *_redis_errors()[1])) and not isinstance(error, BrokerUnavailable)


async def reach[T](operation: str, channel: str | None, call: Callable[[], Awaitable[T]], retry: bool = False,
                   broker: str = "Redis") -> T:
    """Await ``call()`` on the broker (named ``broker`` in what is logged and raised), retried once on a
    broken connection if ``retry``; else BrokerUnavailable."""
    try:
        try:
            result = await call()
        except Exception as error:
            if not (retry and is_broken_connection(error)):
                raise
            result = await call()  # the failed command dropped its connection: this one reconnects
    except Exception as error:
        if not is_unreachable(error):
            raise
        broker_state.failed(operation, error, broker)
        raise BrokerUnavailable(
            f"{broker} is unreachable ({operation} on {channel!r} failed: {error or type(error).__name__}); "
            "the message was published to nobody", channel,
        ) from error
    broker_state.recovered()
    return result


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
