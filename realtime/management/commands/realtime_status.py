"""python manage.py realtime_status [--json]: the deployment's figures, as the admin's Realtime page shows them.

It reads the snapshots every serving process publishes to Redis (``REDIS_URL``), so it can run
in any process of the deployment. Without Redis it can see only itself, and says so.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from realtime.ops import fleet


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _table(rows: list[list[Any]], headers: list[str]) -> list[str]:
    cells = [headers, *[[str(value) for value in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return ["  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip() for row in cells]


class Command(BaseCommand):
    help = "Processes, connections per endpoint, channels, drops and broker state of the whole deployment."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print the snapshots as JSON")

    def handle(self, **options: Any) -> None:
        found = fleet.read_sync()
        if options["json"]:
            self.stdout.write(json.dumps(found, indent=2))
            return
        for line in self.render(found):
            self.stdout.write(line)

    def render(self, found: dict[str, Any]) -> list[str]:
        processes, now = found["processes"], time.time()
        lines = []
        if found["error"]:
            lines.append(f"{found['error']}: this process can only see itself.")
        elif not found["shared"]:
            lines.append("REDIS_URL is not set: this process can only see itself (run it inside a server process "
                         "or configure Redis to see the deployment).")
        else:
            lines.append(f"{len(processes)} process(es) publishing to Redis.")
        lines += ["", "Processes", *_table([[
            p["process"]["host"], p["process"]["pid"], p["process"]["id"][:8], _age(now - p["process"]["started"]),
            p["open"], p["dropped"], sum(p["slow_consumers"].values()), sum(p["refused"].values()),
            "none" if not p["broker"]["configured"] else ("up" if p["broker"]["up"] else "DOWN"),
            f"{_age(max(0.0, now - p['process']['updated']))} ago",
        ] for p in processes], ["host", "pid", "id", "up", "open", "dropped", "slow", "refused", "broker", "seen"])]

        endpoints: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        channels: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        presence: dict[str, int] = defaultdict(int)
        for p in processes:
            for e in p["connections"]:
                for key in ("open", "connections", "messages_in", "messages_out", "dropped"):
                    endpoints[(e["endpoint"], e["protocol"])][key] += e[key]
            for c in p["channels"]:
                for key in ("subscribers", "rate", "messages", "deliveries", "dropped"):
                    channels[c["name"]][key] += c[key]
            for topic, info in (p.get("presence") or {}).items():
                presence[topic] += info.get("members", 0) if isinstance(info, dict) else int(info)
        lines += ["", "Connections per endpoint", *_table([
            [endpoint, protocol, f["open"], f["connections"], f["messages_in"], f["messages_out"], f["dropped"]]
            for (endpoint, protocol), f in sorted(endpoints.items(), key=lambda item: -item[1]["open"])
        ], ["endpoint", "protocol", "open", "total", "in", "out", "dropped"])]
        lines += ["", "Channels", *_table([
            [name, int(f["subscribers"]), f"{f['rate']:.1f}", int(f["messages"]), int(f["deliveries"]),
             int(f["dropped"])]
            for name, f in sorted(channels.items(), key=lambda item: (-item[1]["subscribers"], item[0]))[:50]
        ], ["channel", "subscribers", "msg/s", "messages", "deliveries", "dropped"])]
        if presence:
            lines += ["", "Presence", *_table([[t, n] for t, n in sorted(presence.items())], ["topic", "members"])]
        return lines
