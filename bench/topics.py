"""Many channels over one connection (issue 14): TopicSocket beside the WebSocketView fan-out.

    .venv/bin/python bench/topics.py [--runs 3] [--n 1000] [--m 200] [--channels 100] [--many-m 200]

Three rows, each on a fresh ``bench.peers.realtime_app`` daphne per run, in the same run:

- ``WebSocketView fan-out``: N sockets on ``/ws``, each iterating ``Channel("bench").subscribe()``;
  M messages published flat out (the ``ws_fanout`` scenario of ``bench/run.py``).
- ``TopicSocket, one channel``: N sockets on ``/topics`` (``realtime.TopicSocket``), each
  subscribed to ``bench:0`` by a ``subscribe`` frame; the same M messages through
  ``Topic.publish``. Every delivery is a protocol ``message`` frame (envelope built once per publish).
- ``TopicSocket, one socket x K channels``: one socket subscribed to ``bench:0`` .. ``bench:K-1``;
  each of M messages published on every channel, so the socket receives K x M frames.

Clients are picows on uvloop in this process; latency is receive time minus the message's publish
``ts``. Writes ``results/topics.md`` and ``results/topics.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from picows import WSListener, WSMsgType, ws_connect

from bench.loadgen import aget, cpu_of, percentile, procs_of, raise_fd_limit
from bench.run import OURS, RESULTS, Servers, ServerSpec, daphne, environment, fmt, median_of

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

SPEC = ServerSpec("realtime (daphne)", "ws", daphne(OURS), ours=True)
REPLY = b'{"op":"reply"'
MESSAGE = b'{"op":"message"'


class Client(WSListener):
    """Sends its subscribe frames once connected; records every message frame with its arrival time."""

    received: list[tuple[float, bytes]] = []
    replies = 0

    def __init__(self, channels: list[str]) -> None:
        self.channels = channels

    def on_ws_connected(self, transport) -> None:
        for i, name in enumerate(self.channels):
            frame = json.dumps({"op": "subscribe", "ref": str(i), "channel": name}).encode()
            transport.send(WSMsgType.TEXT, frame)

    def on_ws_frame(self, transport, frame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.disconnect()
            return
        payload = frame.get_payload_as_bytes()
        if payload.startswith(REPLY):
            Client.replies += 1
        else:
            Client.received.append((time.time(), payload))


async def connect_all(url: str, subscriptions: list[list[str]]) -> list:
    sem = asyncio.Semaphore(100)
    transports = []

    async def one(channels: list[str]) -> None:
        async with sem:
            transport, _ = await ws_connect(lambda: Client(channels), url, websocket_handshake_timeout=30)
            transports.append(transport)

    await asyncio.wait_for(asyncio.gather(*(one(c) for c in subscriptions)), 120)
    return transports


async def measure(kind: str, base: str, pid: int, n: int, m: int, channels: int) -> dict:
    """One row's run against a started server; returns its numbers."""
    Client.received, Client.replies = [], 0
    result: dict = {"kind": kind, "errors": []}
    ws_base = base.replace("http://", "ws://", 1)
    t_connect = time.perf_counter()
    if kind == "view":
        transports = await connect_all(f"{ws_base}/ws", [[] for _ in range(n)])
        deadline = time.monotonic() + 30
        while json.loads(await aget(f"{base}/stats"))["subscribers"] < n and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        expected, publish = n * m, f"{base}/publish?count={m}&rate=0&size=64"
    else:
        names = [f"bench:{i}" for i in range(channels)]
        per_socket = [names] if kind == "many" else [names[:1] for _ in range(n)]
        transports = await connect_all(f"{ws_base}/topics", per_socket)
        wanted = sum(len(c) for c in per_socket)
        deadline = time.monotonic() + 60
        while Client.replies < wanted and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if Client.replies < wanted:
            result["errors"].append(f"{Client.replies} of {wanted} subscribe replies")
        expected = wanted * m
        publish = f"{base}/publish-topics?count={m}&rate=0&size=64&channels={channels if kind == 'many' else 1}"
    result["connect_s"] = time.perf_counter() - t_connect
    await asyncio.sleep(0.5)
    server = procs_of([pid])
    cpu0 = cpu_of(server)
    t0 = time.time()
    await aget(publish)
    last_n, last_change, hard = 0, time.monotonic(), time.monotonic() + 180
    while len(Client.received) < expected:
        await asyncio.sleep(0.02)
        now = time.monotonic()
        if len(Client.received) != last_n:
            last_n, last_change = len(Client.received), now
        elif now - last_change > 10 or now > hard:
            result["errors"].append(f"stalled at {last_n} of {expected}")
            break
    cpu = cpu_of(server) - cpu0
    received = Client.received[:]
    wall = max(1e-9, (received[-1][0] if received else time.time()) - t0)
    latencies = []
    for t_recv, raw in received:
        message = json.loads(raw)
        data = message["data"] if raw.startswith(MESSAGE) else message
        latencies.append((t_recv - data["ts"]) * 1000.0)
    latencies.sort()
    result.update(
        sockets=len(transports), expected=expected, received=len(received), lost=expected - len(received),
        deliveries_per_s=len(received) / wall, p50_ms=percentile(latencies, 50), p99_ms=percentile(latencies, 99),
        server_cpu_us_per_delivery=cpu * 1e6 / len(received) if received else None,
    )
    for transport in transports:
        transport.disconnect(graceful=False)
    await asyncio.sleep(0.2)
    return result


ROWS = [
    ("view", "WebSocketView fan-out: N sockets, one Channel"),
    ("topic", "TopicSocket, one channel: N sockets subscribed to bench:0"),
    ("many", "TopicSocket, one socket x K channels (each message on every channel)"),
]
COLUMNS = [
    ("sockets", "sockets", "{:,.0f}"),
    ("expected", "deliveries", "{:,.0f}"),
    ("deliveries_per_s", "deliveries/s", "{:,.0f}"),
    ("p50_ms", "p50 ms", "{:,.1f}"),
    ("p99_ms", "p99 ms", "{:,.1f}"),
    ("lost", "lost", "{:,.0f}"),
    ("server_cpu_us_per_delivery", "CPU µs/delivery", "{:.1f}"),
    ("connect_s", "connect s", "{:.2f}"),
]


def run_all(args) -> dict:
    report: dict = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "environment": environment(),
                    "params": {k: v for k, v in vars(args).items() if k != "out"}, "rows": {}}
    began = time.monotonic()
    for kind, title in ROWS:
        runs = []
        for i in range(args.runs):
            with Servers(SPEC, f"topics-{kind}-{i}") as servers:
                m = args.many_m if kind == "many" else args.m
                runner = uvloop.run if uvloop is not None else asyncio.run
                res = runner(measure(kind, servers.urls[0], servers.pids[0], args.n, m, args.channels))
            print(f"{kind} run {i + 1}: {res['deliveries_per_s']:,.0f}/s lost {res['lost']} {res['errors']}",
                  flush=True)
            runs.append(res)
        report["rows"][kind] = {"title": title, "runs": runs,
                                "median": {key: median_of(runs, key) for key, _, _ in COLUMNS}}
    report["elapsed_s"] = time.monotonic() - began
    return report


def markdown(report: dict) -> str:
    p = report["params"]
    env = report["environment"]
    lines = [
        "# Many channels over one connection (issue 14)", "",
        f"Run {report['started']}, {report['elapsed_s']:.0f} s; `bench/topics.py --runs {p['runs']} --n {p['n']} "
        f"--m {p['m']} --channels {p['channels']} --many-m {p['many_m']}`. Medians of {p['runs']} runs, a fresh "
        f"daphne per run; Python {env['python']}, {env['cpus']} cores **shared with other engineers' work** "
        "(numbers are indicative, not a quiet machine's), clients in the same machine.", "",
        "| row | " + " | ".join(header for _, header, _ in COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for row in report["rows"].values():
        median = row["median"]
        lines.append(f"| {row['title']} | " + " | ".join(fmt(median[key], f) for key, _, f in COLUMNS) + " |")
    errors = [e for row in report["rows"].values() for run in row["runs"] for e in run["errors"]]
    lines += ["", f"Errors: {errors or 'none'}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n", type=int, default=1000, help="sockets of the one-channel rows")
    parser.add_argument("--m", type=int, default=200, help="messages of the one-channel rows")
    parser.add_argument("--channels", type=int, default=100, help="channels of the one-socket row")
    parser.add_argument("--many-m", type=int, default=200, help="messages per channel of the one-socket row")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    raise_fd_limit()
    report = run_all(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "topics.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "topics.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
