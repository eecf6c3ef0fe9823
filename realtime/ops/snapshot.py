"""One process's figures as a JSON-ready dict: what the admin page and ``realtime_status`` show.

Counters are cumulative since the process started; rates are per second over the last few
seconds (between two snapshots at least a second apart).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..pubsub import nats, sharded
from ..pubsub.broker import broker_state
from ..pubsub.channel import PROCESS_ID, registry
from ..pubsub.nats import nats_url
from ..pubsub.redis import redis_url
from .connections import live
from .stats import stats

#: Channels listed per process: the busiest by subscribers, then by messages.
TOP_CHANNELS = 50

#: Functions returning ``{topic: {"members": n, ...}}``: presence, where a topic keeps it.
presence_providers: list[Callable[[], dict[str, Any]]] = []


def register_presence(provider: Callable[[], dict[str, Any]]) -> None:
    """Show ``provider()``'s presence figures on the admin page and in ``realtime_status``."""
    if provider not in presence_providers:
        presence_providers.append(provider)


class _Rates:
    """Per-second rates of channel messages, between samples at least a second apart."""

    def __init__(self) -> None:
        self.previous: tuple[float, dict[str, int]] | None = None
        self.rates: dict[str, float] = {}

    def update(self, now: float, counts: dict[str, int]) -> dict[str, float]:
        if self.previous is None:
            self.previous = (now, counts)
        elif now - self.previous[0] >= 1.0:
            then, before = self.previous
            self.rates = {name: (count - before.get(name, 0)) / (now - then) for name, count in counts.items()}
            self.previous = (now, counts)
        return self.rates


_rates = _Rates()


def endpoint_figures() -> list[dict[str, Any]]:
    """Per (endpoint, protocol): open now, ever accepted, messages in and out, dropped."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def row(key: tuple[str, str]) -> dict[str, Any]:
        if key not in rows:
            rows[key] = {"endpoint": key[0], "protocol": key[1], "open": 0, "connections": 0,
                         "messages_in": 0, "messages_out": 0, "dropped": 0}
        return rows[key]

    for key, totals in list(stats.ended.items()):
        figures = row(key)
        figures["connections"] += totals.connections
        figures["messages_in"] += totals.received
        figures["messages_out"] += totals.sent
        figures["dropped"] += totals.dropped
    for record in list(live):
        if not record.accepted or getattr(record.ws, "refused", False):
            continue
        figures = row((record.endpoint, record.protocol))
        figures["open"] += record.open
        figures["connections"] += 1
        figures["messages_in"] += record.messages_in()
        figures["messages_out"] += record.messages_out()
        figures["dropped"] += record.dropped()
    return sorted(rows.values(), key=lambda r: (r["protocol"], r["endpoint"]))


def channel_figures() -> list[dict[str, Any]]:
    """Every named channel of this process with its counters (see Channel's attributes)."""
    rows = []
    for name, channel in list(registry.items()):
        subscribers = channel.subscribers
        rows.append({
            "name": name,
            "subscribers": len(subscribers),
            "published": channel.published,
            "messages": channel.messages,
            "deliveries": channel.deliveries,
            "dropped": channel.dropped_gone + sum(getattr(s, "dropped", 0) for s in subscribers),
            "broker_errors": channel.broker_errors,
            "rejected": channel.rejected,
        })
    return rows


def take() -> dict[str, Any]:
    """This process's snapshot."""
    now = time.time()
    channels = channel_figures()
    rates = _rates.update(time.monotonic(), {c["name"]: c["messages"] for c in channels})
    for channel in channels:
        channel["rate"] = round(rates.get(channel["name"], 0.0), 2)
    busiest = sorted(channels, key=lambda c: (-c["subscribers"], -c["messages"], c["name"]))[:TOP_CHANNELS]
    presence: dict[str, Any] = {}
    for provider in list(presence_providers):
        try:
            presence.update(provider())
        except Exception:  # noqa: S112 - a broken provider must not hide the rest
            continue
    endpoints = endpoint_figures()
    return {
        "process": {"id": PROCESS_ID, "pid": os.getpid(), "host": socket.gethostname(), "version": __version__,
                    "started": stats.started, "updated": now},
        "connections": endpoints,
        "open": sum(e["open"] for e in endpoints),
        "channels": busiest,
        "channel_count": len(channels),
        "dropped": sum(c["dropped"] for c in channels),
        "refused": {f"{protocol}:{code}": n for (protocol, code), n in list(stats.refused.items())},
        "slow_consumers": dict(stats.slow_consumers),
        "history": {"replays": stats.replays, "replayed": stats.replayed, "resets": stats.resets,
                    "gaps": stats.gaps, "gap_messages": stats.gap_messages},
        "latency": {"count": stats.latency.count, "p50": stats.latency.quantile(0.5),
                    "p99": stats.latency.quantile(0.99)},
        "broker": {"configured": redis_url() is not None or nats_url() is not None, "up": broker_state.up,
                   "errors": broker_state.errors_total, "layer": sharded.figures(), "nats": nats.figures()},
        "presence": presence,
    }
