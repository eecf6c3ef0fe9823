"""The process's counters as Prometheus metrics, read at scrape time (the ``[metrics]`` extra).

Nothing is counted through ``prometheus_client`` on the hot path: a collector reads
:data:`realtime.ops.stats.stats`, the live connection records and the named Channels when
Prometheus scrapes. Without ``prometheus_client`` installed everything else works and
:func:`available` is False (``MetricsView`` answers 501, ``METRICS_PORT`` serves nothing).

Labels stay bounded: endpoints by route pattern (``/api/chat/ws/<room>``), channels through
:mod:`realtime.ops.labels`, close codes and statuses from their small sets.
"""

from __future__ import annotations

import importlib.util
import logging
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from ..conf import setting
from ..pubsub import sharded
from ..pubsub.broker import broker_state
from .labels import channel_labels
from .snapshot import channel_figures, endpoint_figures
from .stats import stats

logger = logging.getLogger("realtime.ops")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_registered = False
_served_port: int | None = None


def available() -> bool:
    """Whether ``prometheus_client`` is installed."""
    return importlib.util.find_spec("prometheus_client") is not None


class RealtimeCollector:
    """A ``prometheus_client`` collector over realtime's own counters."""

    def describe(self) -> list[Any]:
        return []  # described at collect time: no samples are built at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        endpoints = endpoint_figures()
        family = GaugeMetricFamily("realtime_connections_open", "Open WebSockets and SSE streams.",
                                   labels=["endpoint", "protocol"])
        for row in endpoints:
            family.add_metric([row["endpoint"], row["protocol"]], row["open"])
        yield family
        for name, key, text in (
            ("realtime_connections", "connections", "Connections accepted since start."),
            ("realtime_messages_received", "messages_in", "WebSocket messages received from clients."),
            ("realtime_messages_sent", "messages_out", "Frames sent to clients (heartbeats included)."),
            ("realtime_connection_dropped_messages", "dropped",
             "Messages dropped for connections that fell behind (their Channel queues were full)."),
        ):
            family = CounterMetricFamily(name, text, labels=["endpoint", "protocol"])
            for row in endpoints:
                family.add_metric([row["endpoint"], row["protocol"]], row[key])
            yield family

        family = HistogramMetricFamily("realtime_connection_duration_seconds", "How long ended connections lasted.",
                                       labels=["endpoint", "protocol"])
        for (endpoint, protocol), totals in sorted(stats.ended.items()):
            family.add_metric([endpoint, protocol], totals.duration.cumulative(), totals.duration.sum)
        yield family
        family = CounterMetricFamily("realtime_connections_closed", "Ended connections by close code and closer.",
                                     labels=["protocol", "code", "closed_by"])
        for (protocol, code, by), count in sorted(stats.closed.items()):
            family.add_metric([protocol, code, by], count)
        yield family
        family = CounterMetricFamily("realtime_handshakes_refused",
                                     "Refused WebSocket handshakes (close code) and SSE requests (HTTP status).",
                                     labels=["protocol", "code"])
        for (protocol, code), count in sorted(stats.refused.items()):
            family.add_metric([protocol, code], count)
        yield family
        family = CounterMetricFamily("realtime_slow_consumer_closes",
                                     "Connections ended because the client did not read (4008, SSE slow_consumer).",
                                     labels=["protocol"])
        for protocol in ("websocket", "sse"):
            family.add_metric([protocol], stats.slow_consumers.get(protocol, 0))
        yield family

        yield from self._channels()

        yield CounterMetricFamily("realtime_gaps", "Gaps reported to subscribers that fell behind.", value=stats.gaps)
        yield CounterMetricFamily("realtime_gap_messages", "Messages those gaps reported missed.",
                                  value=stats.gap_messages)
        yield CounterMetricFamily("realtime_history_replays", "Subscriptions resumed from history.",
                                  value=stats.replays)
        yield CounterMetricFamily("realtime_history_replayed_messages", "Messages replayed from history.",
                                  value=stats.replayed)
        yield CounterMetricFamily("realtime_history_resets",
                                  "Resumes history could not serve (the client must refetch: event: reset).",
                                  value=stats.resets)
        yield GaugeMetricFamily("realtime_broker_up", "1 while Redis answers (always 1 without Redis).",
                                value=1 if broker_state.up else 0)
        yield CounterMetricFamily("realtime_broker_errors", "Failed broker (Redis) operations.",
                                  value=broker_state.errors_total)
        layer = sharded.figures()
        yield CounterMetricFamily("realtime_layer_undelivered",
                                  "Messages the Redis Cluster channel layer could not publish or deliver.",
                                  value=layer["undelivered"])
        yield CounterMetricFamily("realtime_layer_resubscribes",
                                  "Times the Redis Cluster channel layer resubscribed (a failover, a slot move).",
                                  value=layer["resubscribes"])
        latency = stats.latency
        family = HistogramMetricFamily("realtime_publish_to_send_seconds",
                                       "From Channel.publish to the send of a subscriber, on sampled WebSockets.")
        family.add_metric([], latency.cumulative(), latency.sum)
        yield family

    def _channels(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        folded: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for row in channel_figures():
            sums = folded[channel_labels.label(row["name"])]
            for key in ("subscribers", "published", "messages", "deliveries", "dropped", "broker_errors"):
                sums[key] += row[key]
        family = GaugeMetricFamily("realtime_channel_subscribers", "Subscribers in this process.", labels=["channel"])
        for label, sums in sorted(folded.items()):
            family.add_metric([label], sums["subscribers"])
        yield family
        for key, name, text in (
            ("published", "realtime_channel_publishes", "Channel.publish calls in this process."),
            ("messages", "realtime_channel_messages", "Messages fanned out in this process (any process's)."),
            ("deliveries", "realtime_channel_deliveries", "Subscribers reached, counted once per message."),
            ("dropped", "realtime_channel_dropped", "Messages dropped by full subscriber queues."),
            ("broker_errors", "realtime_channel_broker_errors", "Publishes refused with BrokerUnavailable."),
        ):
            family = CounterMetricFamily(name, text, labels=["channel"])
            for label, sums in sorted(folded.items()):
                family.add_metric([label], sums[key])
            yield family


def registry() -> Any:
    """prometheus_client's default registry, with the realtime collector registered once."""
    global _registered
    from prometheus_client import REGISTRY

    if not _registered:
        REGISTRY.register(RealtimeCollector())
        _registered = True
    return REGISTRY


def exposition() -> bytes:
    """The text a scrape gets."""
    from prometheus_client import generate_latest

    return generate_latest(registry())


def serve_metrics_port() -> int | None:
    """Serve ``/metrics`` on ``127.0.0.1:METRICS_PORT`` (a thread), once per process; the port, or None."""
    global _served_port
    port = setting("METRICS_PORT")
    if not port or _served_port is not None:
        return _served_port
    if not available():
        logger.warning("REALTIME['METRICS_PORT'] is set but prometheus_client is not installed: "
                       "pip install 'django-realtime-endpoints[metrics]'")
        return None
    from prometheus_client import start_http_server

    try:
        start_http_server(int(port), addr="127.0.0.1", registry=registry())
    except OSError as error:
        logger.warning("Could not serve metrics on 127.0.0.1:%s: %s", port, error)
        return None
    _served_port = int(port)
    logger.info("Prometheus metrics on http://127.0.0.1:%s/metrics", port)
    return _served_port
