"""Which broker carries what every process shares: the one place that decides it from the settings.

- ``settings.NATS_URL``: history channels on NATS JetStream
  (:class:`~realtime.pubsub.jetstream.JetStreamTransport`); the channel layer is then
  :class:`~realtime.pubsub.nats.NatsChannelLayer` (system check ``realtime.E013``).
- else ``settings.REDIS_URL``: history channels on Redis Streams
  (:class:`~realtime.pubsub.streams.StreamTransport`; one server, or a Redis Cluster).
- neither: history stays in each process's memory, behind whatever channel layer there is.

Channels without history travel on the channel layer whichever broker it is on
(:mod:`realtime.pubsub.layer`), so they need no decision here. Presence picks its store in
:func:`realtime.topics.stores.presence_store` (Redis, else NATS KV, else memory); idempotency
records, lifecycle events and the ops snapshots are on Redis only (``REDIS_URL``).
"""

from __future__ import annotations

from typing import Any

from .transport import Fanout, Transport

NATS, REDIS = "nats", "redis"


def history_broker() -> tuple[str, str] | None:
    """``(kind, url)`` of the broker that keeps history for every process, or None (memory)."""
    from .nats import nats_url
    from .redis import redis_url

    url = nats_url()
    if url is not None:
        return NATS, url
    url = redis_url()
    if url is not None:
        return REDIS, url
    return None


def history_transport(channel: Fanout, broker: tuple[str, str]) -> Transport:
    """A new transport for history ``channel`` on ``broker`` (a value of :func:`history_broker`)."""
    kind, url = broker
    transport: Any
    if kind == NATS:
        from .jetstream import JetStreamTransport

        transport = JetStreamTransport(channel, url)
    else:
        from .streams import StreamTransport

        transport = StreamTransport(channel, url)
    return transport
