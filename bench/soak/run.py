"""Load soak for ``realtime`` on daphne (issue 7): thousands of subscribers, a steady broadcast,
then everyone leaves. Does the server deliver, and does it give its memory and subscribers back?

    .venv/bin/python bench/soak/run.py [--ws 5000] [--sse 1000] [--seconds 60] [--rate 10]

Phases, every one bounded in count and time:

1. start daphne (``bench/soak/app.py``, or with ``--app peer`` the hand-written ``peer_app.py``) on a
   free loopback port, open-files limit raised for this process and inherited by the server;
2. warm-up: a few WebSockets and SSE streams receive a few messages and leave; then the baseline
   (``/stats?gc=1``): RSS, asyncio task count;
3. open ``--ws`` WebSockets and ``--sse`` SSE streams (bounded concurrency), wait until the server
   counts them all; RSS per connection = (RSS connected − baseline) / connections;
4. broadcast ``--rate`` msg/s for ``--seconds`` seconds through an in-server publisher, counting
   what every client receives (sequence gaps, duplicates, latency on a sample of clients);
5. disconnect everyone, wait (bounded) until the server holds no subscriber and its task count is
   back to baseline, then RSS after ``gc.collect()`` and again after ``malloc_trim(0)``;
6. ``--rounds``: everyone connects again and leaves (no broadcast): memory kept for reuse stays
   flat, a leak grows.

``bench/soak/README.md`` compares the committed runs.

Writes ``bench/soak/results.md`` and ``results.json`` next to this file and prints the summary.
The server is stopped by its PID in a ``finally``; its log goes to ``bench/soak/logs/`` (ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

try:
    import httpx
    import picows
    import psutil
    from picows import WSListener, WSMsgType, ws_connect
except ImportError as error:  # pragma: no cover - a hint instead of a traceback
    sys.exit(f"{error}: install the bench extras: .venv/bin/pip install -r bench/requirements.txt")

try:
    import uvloop
except ImportError:  # pragma: no cover - optional speed-up
    uvloop = None

from bench.loadgen import SseProtocol  # noqa: E402 - the raw HTTP/1.1 SSE client (chunked decoding)
from bench.run import wait_port  # noqa: E402 - the same readiness check as the matrix runner

LOGS = HERE / "logs"
MEMORY_TOLERANCE = 0.10  # "returns within 10% of its starting memory"
LATENCY_SAMPLE_EVERY = 25  # every 25th client records publish→receive latency
PROGRESS_EVERY = 5.0


# ----------------------------------------------------------------------------- clients


class Counter:
    """What one client received: data messages, sequence gaps, duplicates, keepalives, latency."""

    __slots__ = ("closed", "count", "dups", "gaps", "last", "latencies", "pings", "refused", "t_headers", "t_open")

    def __init__(self, sample: bool) -> None:
        self.t_open = time.monotonic()
        self.t_headers: float | None = None  # SSE: when the response headers arrived
        self.refused: str | None = None  # SSE: a non-200 answer
        self.count = 0
        self.last = -1
        self.gaps = 0
        self.dups = 0
        self.pings = 0
        self.closed = False
        self.latencies: list[float] | None = [] if sample else None

    def message(self, raw: bytes, now: float) -> None:
        data = None
        if raw.startswith(b'{"seq":') and self.latencies is None:
            # Most clients only count: read the sequence number without a JSON parse (the client
            # shares 2 cores with the server, and parses up to 60,000 messages/s).
            try:
                seq = int(raw[7:raw.index(b",", 7)])
            except ValueError:
                seq = None
        else:
            try:
                data = json.loads(raw)
            except ValueError:
                return
            seq = data.get("seq") if type(data) is dict else None
        if seq is None:
            self.pings += 1  # {"type": "ping"}: the WebSocketView keepalive
            return
        self.count += 1
        if seq > self.last + 1:
            self.gaps += seq - self.last - 1
        elif seq <= self.last:
            self.dups += 1
        self.last = max(self.last, seq)
        if self.latencies is not None and data is not None:
            self.latencies.append((now - data["ts"]) * 1000.0)


class WsClient(WSListener):
    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def on_ws_frame(self, transport, frame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            self.counter.message(frame.get_payload_as_bytes(), time.time())
        elif frame.msg_type == WSMsgType.CLOSE:
            self.counter.closed = True
            transport.disconnect()

    def on_ws_disconnected(self, transport) -> None:
        self.counter.closed = True


class SseClient(SseProtocol):
    """loadgen's SSE protocol, counting into a Counter instead of a global list."""

    def __init__(self, host: str, ready: asyncio.Future, counter: Counter) -> None:
        super().__init__(host, ready)
        self.counter = counter

    def _lines(self, data: bytes) -> None:
        if not data:
            return
        buf = self.text + data if self.text else data
        lines = buf.split(b"\n")
        self.text = lines.pop()
        now = time.time()
        for line in lines:
            if line.startswith(b"data:"):
                self.counter.message(line[5:].strip(), now)
            elif line.startswith(b":"):
                self.counter.pings += 1  # ": ping" comment

    def connection_lost(self, exc) -> None:
        self.counter.closed = True
        super().connection_lost(exc)


async def open_ws(base: str, counter: Counter):
    url = base.replace("http://", "ws://", 1) + "/ws"
    transport, _ = await ws_connect(lambda: WsClient(counter), url, websocket_handshake_timeout=30)
    return transport


async def open_sse(base: str, counter: Counter):
    """Connect and send the request; do not wait for the response headers.

    daphne (Twisted) writes the headers only with the first body bytes, and an SSEView's first
    bytes are its first event or ``: ping`` (``ping_interval`` seconds), so waiting for them would
    hold a connect slot for up to 15 s. When they arrive is recorded in ``counter.t_headers``.
    """
    host_port = base.split("://", 1)[1]
    host, port = host_port.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def headers(future: asyncio.Future) -> None:
        if future.cancelled():
            return
        if future.exception() is not None:
            counter.refused = repr(future.exception())[:200]
        else:
            counter.t_headers = time.monotonic()

    ready.add_done_callback(headers)
    counter.t_open = time.monotonic()
    transport, _ = await loop.create_connection(lambda: SseClient(host_port, ready, counter), host, int(port))
    return transport


# ----------------------------------------------------------------------------- server process


def raise_fd_limit(needed: int) -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it); the limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


APPS = {"realtime": "bench.soak.app:application", "peer": "bench.soak.peer_app:application"}


def start_server(port: int, nofile: int, log, pythonmalloc: str | None = None,
                 tracemalloc_frames: int = 0, server_env: list[str] | None = None,
                 app: str = "bench.soak.app:application") -> subprocess.Popen:
    env = dict(os.environ)
    env.update(item.split("=", 1) for item in server_env or [])
    if pythonmalloc:
        env["PYTHONMALLOC"] = pythonmalloc
    if tracemalloc_frames:
        env["SOAK_TRACEMALLOC"] = str(tracemalloc_frames)
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the soak app brings its own settings
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable, "-m", "daphne", "-v", "1",
        # A listen backlog larger than Twisted's default 50, for thousands of connects.
        "-e", f"tcp:port={port}:interface=127.0.0.1:backlog=1024",
        app,
    ]

    def child_limits() -> None:  # runs in the child before exec: the same open-files limit
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))

    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=child_limits,
    )


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM by PID, SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# ----------------------------------------------------------------------------- the soak


class Soak:
    def __init__(self, args, base: str, pid: int) -> None:
        self.args = args
        self.base = base
        self.server = psutil.Process(pid)
        self.me = psutil.Process()
        # tracing slows the server down a lot
        self.http = httpx.AsyncClient(base_url=base, timeout=300 if args.tracemalloc or args.diagnose else 30)
        self.result: dict = {"errors": [], "progress": []}
        self.ws: list = []
        self.sse: list = []
        self.counters: dict[str, list[Counter]] = {"ws": [], "sse": []}

    def log(self, text: str) -> None:
        print(f"[soak {time.strftime('%H:%M:%S')}] {text}", flush=True)

    def error(self, text: str) -> None:
        self.result["errors"].append(text)
        self.log("ERROR: " + text)

    async def stats(self, gc: bool = False, trim: bool = False, census: bool = False, **extra: str) -> dict:
        params = {"census": "1"} if census else {}
        if self.args.diagnose:  # off by default: the censuses allocate, and would move the baseline
            params.update(extra)  # snapshot=NAME, diff=BASE, arenas=base|diff, pymalloc=1: see bench/soak/app.py
        if gc:
            params["gc"] = "1"
        if trim:
            params["trim"] = "1"
        response = await self.http.get("/stats", params=params)
        response.raise_for_status()
        return response.json()

    def rss(self) -> int:
        return self.server.memory_info().rss

    # -- connecting ---------------------------------------------------------------------------

    async def connect(self, n_ws: int, n_sse: int, concurrency: int, timeout: float) -> tuple[list, list, list[str]]:
        """Open n_ws WebSockets and n_sse SSE streams, interleaved, at most ``concurrency`` at a time."""
        sem = asyncio.Semaphore(concurrency)
        ws, sse, failures = [], [], []

        async def one(kind: str, index: int) -> None:
            counter = Counter(sample=index % LATENCY_SAMPLE_EVERY == 0)
            async with sem:
                try:
                    if kind == "ws":
                        ws.append((await asyncio.wait_for(open_ws(self.base, counter), 30), counter))
                    else:
                        sse.append((await asyncio.wait_for(open_sse(self.base, counter), 30), counter))
                except (OSError, TimeoutError, picows.WSError) as exc:
                    failures.append(f"{kind}: {exc!r}"[:200])

        kinds = ["ws"] * n_ws + ["sse"] * n_sse
        # Interleave so both kinds are connected throughout the ramp (SSE spread over the WS).
        step = max(1, len(kinds) // max(1, n_sse)) if n_sse else 0
        order = []
        ws_i = sse_i = 0
        for i in range(len(kinds)):
            if n_sse and sse_i < n_sse and (i % step == step - 1 or ws_i >= n_ws):
                order.append(("sse", sse_i))
                sse_i += 1
            elif ws_i < n_ws:
                order.append(("ws", ws_i))
                ws_i += 1
            else:
                order.append(("sse", sse_i))
                sse_i += 1
        tasks = [asyncio.ensure_future(one(kind, i)) for kind, i in order]
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            failures.append(f"connect phase timed out after {timeout}s with {len(pending)} still pending")
        return ws, sse, failures

    def close_all(self, ws: list, sse: list) -> None:
        for transport, _ in ws:
            transport.disconnect(graceful=False)
        for transport, _ in sse:
            transport.abort()

    async def wait_for(self, predicate, timeout: float, interval: float = 0.5) -> tuple[bool, dict, float]:
        """Poll /stats until ``predicate(stats)``; (met, last stats, seconds waited)."""
        start = time.monotonic()
        while True:
            current = await self.stats()
            if predicate(current):
                return True, current, time.monotonic() - start
            if time.monotonic() - start > timeout:
                return False, current, time.monotonic() - start
            await asyncio.sleep(interval)

    # -- phases -------------------------------------------------------------------------------

    async def warm_up(self) -> None:
        r = self.result
        r["rss_at_start"] = (await self.stats())["rss"]
        ws, sse, failures = await self.connect(self.args.warmup, self.args.warmup, 10, 30)
        if failures:
            self.error(f"warm-up: {len(failures)} connect failures, e.g. {failures[0]}")
        total = len(ws) + len(sse)
        await self.wait_for(lambda s: s["channel_subscribers"] >= total, 10, 0.1)
        await self.http.get("/publish", params={"count": 5, "rate": 50})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(c.count < 5 for _, c in ws + sse):
            await asyncio.sleep(0.05)
        r["warmup"] = {"ws": len(ws), "sse": len(sse), "received": sum(c.count for _, c in ws + sse),
                       "expected": 5 * total}
        self.close_all(ws, sse)
        ok, _, _ = await self.wait_for(lambda s: s["channel_subscribers"] == 0 and s["ws_subscribers"] == 0, 20)
        if not ok:
            self.error("warm-up connections still subscribed 20 s after they closed")
        await asyncio.sleep(1.0)
        base = await self.stats(gc=True, census=True, snapshot="base", arenas="base", pymalloc="1")
        r["baseline"] = {"rss": base["rss"], "tasks": base["tasks"], "num_fds": base["num_fds"],
                         "pymalloc": base.get("pymalloc"), "glibc": base.get("glibc"),
                         "rss_by_mapping": base.get("rss_by_mapping"),
                         "allocated_blocks": base["allocated_blocks"], "census": base["census"]}
        self.log(f"baseline after warm-up: RSS {mib(base['rss'])} MiB, {base['tasks']} asyncio tasks "
                 f"(RSS at start {mib(r['rss_at_start'])} MiB)")

    async def ramp(self) -> None:
        a, r = self.args, self.result
        t0 = time.perf_counter()
        self.ws, self.sse, failures = await self.connect(a.ws, a.sse, a.concurrency, a.connect_timeout)
        r["connect_s"] = time.perf_counter() - t0
        r["connected"] = {"ws": len(self.ws), "sse": len(self.sse)}
        r["connect_failures"] = len(failures)
        if failures:
            self.error(f"{len(failures)} connect failures, e.g. {failures[0]}")
        n = len(self.ws) + len(self.sse)
        ok, current, _ = await self.wait_for(
            lambda s: s["channel_subscribers"] >= n and s["ws_subscribers"] >= len(self.ws), 60)
        if not ok:
            self.error(f"server counts {current['channel_subscribers']} channel subscribers, "
                       f"{current['ws_subscribers']} WebSockets; clients hold {len(self.ws)} + {len(self.sse)}")
        await asyncio.sleep(1.0)
        full = await self.stats(gc=True)
        r["connected_stats"] = {k: full[k] for k in ("ws_subscribers", "sse_streams", "channel_subscribers",
                                                      "tasks", "rss", "num_fds", "allocated_blocks",
                                                      "threads")}
        r["rss_connected"] = full["rss"]
        r["rss_per_conn"] = (full["rss"] - r["baseline"]["rss"]) / max(1, n)
        self.log(f"connected {len(self.ws)} WS + {len(self.sse)} SSE in {r['connect_s']:.1f} s; "
                 f"server: {full['channel_subscribers']} subscribers, {full['tasks']} tasks, "
                 f"{full['threads']} threads, "
                 f"RSS {mib(full['rss'])} MiB = {r['rss_per_conn'] / 1024:.1f} KiB/connection over baseline")

    async def hold(self) -> None:
        a, r = self.args, self.result
        clients = self.ws + self.sse
        count = round(a.rate * a.seconds)
        before = (await self.stats())["publisher"]  # the warm-up's messages are counted there too
        published0 = before["published"]
        cpu0, me0 = cpu(self.server), cpu(self.me)
        t0 = time.monotonic()
        await self.http.get("/publish", params={"count": count, "rate": a.rate})
        peak = self.rss()
        next_report = t0 + PROGRESS_EVERY
        last_total = 0
        finished_at = None
        drain_seen, drain_moved = -1, time.monotonic()
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            peak = max(peak, self.rss())
            if now >= next_report:
                next_report += PROGRESS_EVERY
                s = await self.stats()
                total = sum(c.count for _, c in clients)
                elapsed = time.monotonic() - t0
                row = {"t": round(elapsed, 1), "published": s["publisher"]["published"], "received": total,
                       "received_per_s": round((total - last_total) / PROGRESS_EVERY),
                       "rss_mib": round(s["rss"] / 2**20, 1), "queued": s["queued_live"],
                       "dropped": s["dropped_live"], "tasks": s["tasks"],
                       "server_cpu": round((cpu(self.server) - cpu0) / elapsed, 2),
                       "client_cpu": round((cpu(self.me) - me0) / elapsed, 2),
                       "closed_clients": sum(c.closed for _, c in clients)}
                r["progress"].append(row)
                last_total = total
                self.log("hold " + ", ".join(f"{k}={v}" for k, v in row.items()))
            if finished_at is None:
                if now - t0 > a.seconds and not (await self.stats())["publisher"]["running"]:
                    finished_at = drain_moved = now
                elif now - t0 > a.seconds * 3 + 60:
                    self.error("publisher still running long after its schedule; stopped waiting")
                    break
            else:  # publisher done: let queued messages drain, bounded (and stop early on no progress)
                total = sum(c.count for _, c in clients)
                if total != drain_seen:
                    drain_seen, drain_moved = total, now
                if total >= count * len(clients) or now - finished_at > a.drain_timeout or now - drain_moved > 10:
                    break
        hold_s = time.monotonic() - t0
        end = await self.stats()
        server_cpu = cpu(self.server) - cpu0
        client_cpu = cpu(self.me) - me0
        received = sum(c.count for _, c in clients)
        published = end["publisher"]["published"] - published0
        expected = published * len(clients)
        latencies = sorted(x for _, c in clients if c.latencies for x in c.latencies)
        per_client = [c.count for _, c in clients]
        r["hold"] = {
            "seconds": hold_s, "published": published, "publish_rate": a.rate,
            "fanout_reported_by_publish": end["publisher"]["delivered"] - before["delivered"],
            "expected_deliveries": expected, "received": received, "lost": expected - received,
            "lost_pct": 100.0 * (expected - received) / max(1, expected),
            "ws_received": sum(c.count for _, c in self.ws), "sse_received": sum(c.count for _, c in self.sse),
            "clients_complete": sum(1 for c in per_client if c == published),
            "clients_with_loss": sum(1 for c in per_client if c < published),
            "min_per_client": min(per_client, default=0), "max_per_client": max(per_client, default=0),
            "seq_gaps": sum(c.gaps for _, c in clients), "duplicates": sum(c.dups for _, c in clients),
            "dropped_by_server_queues": end["dropped_live"],
            "keepalives_received": sum(c.pings for _, c in clients),
            "clients_closed_during_hold": sum(c.closed for _, c in clients),
            "latency_ms": {
                "samples": len(latencies), "p50": pct(latencies, 50), "p95": pct(latencies, 95),
                "p99": pct(latencies, 99), "max": latencies[-1] if latencies else None,
                "mean": statistics.fmean(latencies) if latencies else None,
            },
            "deliveries_per_s": received / max(1e-9, hold_s),
            "server_cpu_s": server_cpu, "server_cores": server_cpu / max(1e-9, hold_s),
            "client_cpu_s": client_cpu, "client_cores": client_cpu / max(1e-9, hold_s),
            "rss_peak": peak, "rss_end": end["rss"], "tasks_end": end["tasks"],
        }
        r["sse_headers"] = self.sse_headers()
        h = r["hold"]
        self.log(f"hold done: {published} published, {received:,} of {expected:,} delivered "
                 f"({h['lost']:,} lost, {h['lost_pct']:.2f}%), p50 {fmt(h['latency_ms']['p50'])} ms, "
                 f"p99 {fmt(h['latency_ms']['p99'])} ms, server {h['server_cores']:.2f} cores")

    def sse_headers(self) -> dict:
        """When SSE clients got their response headers, counted from the connect."""
        waits = sorted(c.t_headers - c.t_open for _, c in self.sse if c.t_headers is not None)
        return {"streams": len(self.sse), "with_headers": len(waits),
                "refused": sum(1 for _, c in self.sse if c.refused), "p50_s": pct(waits, 50),
                "max_s": waits[-1] if waits else None, "min_s": waits[0] if waits else None}

    async def leave(self) -> None:
        a, r = self.args, self.result
        base = r["baseline"]
        n = len(self.ws) + len(self.sse)
        t0 = time.monotonic()
        self.close_all(self.ws, self.sse)
        self.ws, self.sse = [], []
        ok, current, waited = await self.wait_for(
            lambda s: s["channel_subscribers"] == 0 and s["ws_subscribers"] == 0 and s["sse_streams"] == 0
            and s["tasks"] <= base["tasks"], a.leave_timeout)
        r["leave"] = {"closed": n, "released": ok, "seconds": waited,
                      "channel_subscribers": current["channel_subscribers"],
                      "ws_subscribers": current["ws_subscribers"], "sse_streams": current["sse_streams"],
                      "tasks": current["tasks"], "baseline_tasks": base["tasks"], "num_fds": current["num_fds"]}
        if not ok:
            self.error(f"{a.leave_timeout:.0f} s after disconnecting: {current['channel_subscribers']} channel "
                       f"subscribers, {current['ws_subscribers']} WS, {current['sse_streams']} SSE, "
                       f"{current['tasks']} tasks (baseline {base['tasks']})")
        # Memory: gc.collect() server-side, polled (bounded) until within tolerance.
        limit = base["rss"] * (1 + MEMORY_TOLERANCE)
        samples = await self.settle(limit)
        after = await self.stats(gc=True, census=True, snapshot="after", diff="base", arenas="diff", pymalloc="1")
        rss_gc = after["rss"]
        if after.get("rss_by_mapping"):
            before_map, after_map = base.get("rss_by_mapping") or {}, after["rss_by_mapping"]
            grown = sorted(((after_map.get(k, 0) - before_map.get(k, 0), k) for k in after_map | before_map),
                           reverse=True)
            r["rss_growth_by_mapping"] = [{"mapping": k, "bytes": d} for d, k in grown[:12]]
            self.log("RSS growth by mapping: " + ", ".join(f"{k} {d / 2**20:+.1f} MiB" for d, k in grown[:12]))
        if after.get("pymalloc"):
            r["pymalloc"] = {"baseline": base.get("pymalloc"), "after": after["pymalloc"]}
            self.log(f"pymalloc: {json.dumps(r['pymalloc'])}")
        if after.get("pools"):
            r["pools"] = after["pools"]
            self.log(f"live blocks in pymalloc arenas the baseline did not use: {json.dumps(after['pools'], indent=1)}")
        if after.get("pinning"):
            r["pinning"] = after["pinning"]
            self.log(f"objects in address regions the baseline did not use: {json.dumps(after['pinning'], indent=1)}")
        if after.get("survivors"):
            r["survivors"] = after["survivors"]
            for row in after["survivors"][:15]:
                self.log(f"survivor {row['size_diff']:+,} B {row['count_diff']:+,} blocks at\n    "
                         + "\n    ".join(row["where"]))
        trimmed = await self.stats(gc=True, trim=True)
        r["memory"] = {
            "allocated_blocks_baseline": base["allocated_blocks"], "allocated_blocks_after": after["allocated_blocks"],
            "census_after": after["census"],
            "baseline": base["rss"], "limit": limit, "after_gc": rss_gc, "after_gc_trim": trimmed["rss"],
            "malloc_trim_available": trimmed["malloc_trim"] is not None,
            "settle_samples": samples,
            "within_after_gc": rss_gc <= limit, "within_after_trim": trimmed["rss"] <= limit,
            "waited_s": time.monotonic() - t0,
        }
        m = r["memory"]
        self.log(f"glibc heap: baseline {base.get('glibc')}, after gc {after.get('glibc')}, "
                 f"after trim {trimmed.get('glibc')}")
        r["memory"]["glibc"] = {"baseline": base.get("glibc"), "after_gc": after.get("glibc"),
                                "after_trim": trimmed.get("glibc")}
        self.log(f"after leaving: subscribers {current['channel_subscribers']}, tasks {current['tasks']} "
                 f"(baseline {base['tasks']}), released in {waited:.1f} s; RSS after gc {mib(rss_gc)} MiB, "
                 f"after malloc_trim {mib(trimmed['rss'])} MiB, baseline {mib(base['rss'])} MiB "
                 f"(limit {mib(limit)} MiB)")
        r["pass"] = {
            "no_subscriber_left": ok,
            "memory_within_10pct_after_gc": m["within_after_gc"],
            "memory_within_10pct_after_trim": m["within_after_trim"],
        }

    async def settle(self, limit: float) -> list[dict]:
        """``/stats?gc=1`` every 2 s for up to ``--memory-timeout`` s, or until RSS is under ``limit``.

        daphne cleans up closed connections on its own timers, so what is still allocated right
        after the subscribers are gone can differ from what is left a few seconds later.
        """
        samples, t0 = [], time.monotonic()
        while True:
            current = await self.stats(gc=True)
            samples.append({"t": round(time.monotonic() - t0, 1), "rss": current["rss"],
                            "allocated_blocks": current["allocated_blocks"], "tasks": current["tasks"]})
            if current["rss"] <= limit or time.monotonic() - t0 > self.args.memory_timeout:
                return samples
            await asyncio.sleep(2.0)

    async def again(self, round_no: int) -> None:
        """Connect everyone again (no broadcast) and leave: memory kept for reuse stays flat, a leak grows."""
        a, r = self.args, self.result
        ws, sse, failures = await self.connect(a.ws, a.sse, a.concurrency, a.connect_timeout)
        n = len(ws) + len(sse)
        ok, connected, _ = await self.wait_for(lambda s: s["channel_subscribers"] >= n, 60)
        self.close_all(ws, sse)
        released, current, _ = await self.wait_for(
            lambda s: s["channel_subscribers"] == 0 and s["ws_subscribers"] == 0 and s["sse_streams"] == 0
            and s["tasks"] <= r["baseline"]["tasks"], a.leave_timeout)
        samples = await self.settle(r["baseline"]["rss"] * (1 + MEMORY_TOLERANCE))
        after = await self.stats(gc=True)
        trimmed = await self.stats(gc=True, trim=True)
        row = {"settle_samples": samples, "round": round_no, "connected": n, "connect_failures": len(failures),
               "counted": ok,
               "rss_connected": connected["rss"], "released": released, "channel_subscribers":
               current["channel_subscribers"], "tasks": current["tasks"], "rss_after_gc": after["rss"],
               "rss_after_trim": trimmed["rss"], "allocated_blocks": after["allocated_blocks"]}
        r.setdefault("rounds", []).append(row)
        if not released:
            self.error(f"round {round_no}: {current['channel_subscribers']} subscribers, {current['tasks']} tasks "
                       f"left after {a.leave_timeout:.0f} s")
        self.log(f"round {round_no}: {n} connected and left; subscribers {current['channel_subscribers']}, "
                 f"tasks {current['tasks']}; RSS after gc {mib(after['rss'])} MiB, after trim "
                 f"{mib(trimmed['rss'])} MiB; allocated blocks {after['allocated_blocks']:,}")

    async def run(self) -> dict:
        try:
            await self.warm_up()
            await self.ramp()
            if self.args.seconds > 0:
                await self.hold()
            await self.leave()
            for round_no in range(2, self.args.rounds + 1):
                await self.again(round_no)
        finally:
            self.close_all(self.ws, self.sse)
            await self.http.aclose()
        return self.result


def cpu(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def mib(value: float | None) -> str:
    return "–" if value is None else f"{value / 2**20:.1f}"


def fmt(value, pattern: str = "{:,.1f}") -> str:
    return "–" if value is None else pattern.format(value)


# ----------------------------------------------------------------------------- report


def environment() -> dict:
    versions = {}
    for name in ["django", "channels", "daphne", "twisted", "autobahn", "picows", "uvloop", "psutil", "httpx"]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None

    def git(*argv: str) -> str:
        try:
            return subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
        "packages": versions, "commit": git("rev-parse", "--short", "HEAD").strip(),
        "realtime_uncommitted_files": [line[3:] for line in git("status", "--porcelain", "realtime").splitlines()],
    }


def yes(flag: bool | None) -> str:
    return "**pass**" if flag else "**FAIL**"


def markdown(report: dict) -> str:
    a, r, env = report["args"], report["result"], report["environment"]
    app = a.get("app", "realtime")
    title = "realtime" if app == "realtime" else "the hand-written ASGI peer (bench/soak/peer_app.py)"
    out = [f"# Soak: {title} on daphne (issue 7)", ""]
    out.append(f"Run {report['started']} · {report['elapsed_s']:.0f} s in all · Python {env['python']} on "
               f"{env['cpus']} CPUs · commit {env['commit']}"
               + (f" with uncommitted changes in {', '.join(env['realtime_uncommitted_files'])}"
                  if env["realtime_uncommitted_files"] else ""))
    out.append("")
    out.append(f"`bench/soak/run.py --app {app} --ws {a['ws']} --sse {a['sse']} --seconds {a['seconds']} "
               f"--rate {a['rate']}` — "
               f"client (picows{' + uvloop' if report['client_loop'] == 'uvloop' else ''} for WebSocket, raw asyncio "
               f"protocol for SSE) and server share the machine; open-files limit {report['nofile']}"
               + (f"; server PYTHONMALLOC={a['pythonmalloc']}" if a.get("pythonmalloc") else "")
               + "".join(f"; server {item}" for item in a.get("server_env") or []) + ".")
    out.append("")
    p = r.get("pass", {})
    if p:
        out += ["## Verdict", "",
                f"- holds no subscriber after everyone left (channel subscribers 0, WS/SSE counts 0, "
                f"asyncio tasks back to baseline): {yes(p['no_subscriber_left'])}",
                f"- RSS within 10% of the starting (post-warm-up) RSS after `gc.collect()`: "
                f"{yes(p['memory_within_10pct_after_gc'])}",
                f"- RSS within 10% after `gc.collect()` + `malloc_trim(0)`: {yes(p['memory_within_10pct_after_trim'])}",
                ""]
        m0, b0 = r.get("memory", {}), r.get("baseline", {})
        if m0 and b0.get("allocated_blocks"):
            growth = m0["allocated_blocks_after"] / b0["allocated_blocks"] - 1
            rounds = r.get("rounds", [])
            reused = all(x["rss_connected"] <= r["rss_connected"] * 1.10 for x in rounds) if rounds else None
            later = ", ".join(f"{mib(x['rss_connected'])}" for x in rounds)
            out += [f"Live Python allocations after everyone left: {m0['allocated_blocks_after']:,} blocks vs "
                    f"{b0['allocated_blocks']:,} at baseline ({growth * 100:+.2f}%)"
                    + (f"; reconnecting everyone {'needs no new memory' if reused else 'needs more memory'} "
                       f"(RSS with all connected: {mib(r['rss_connected'])} MiB in round 1, {later} MiB after)"
                       if reused is not None else "")
                    + ". Back-to-baseline blocks with RSS that does not come down means memory held by the "
                    "allocators (pymalloc arenas pinned by a few surviving objects, glibc free lists), not objects "
                    "the server still references; `--pythonmalloc malloc` runs the server on glibc malloc alone "
                    "to tell the two apart.", ""]
    b = r.get("baseline", {})
    c = r.get("connected", {})
    out += ["## Memory", "",
            "RSS is the server process's resident set; allocated blocks is `sys.getallocatedblocks()` "
            "(live Python objects and buffers), which tells memory still in use from memory the allocators keep.",
            "", "| point | server RSS MiB | allocated blocks | asyncio tasks | note |", "|---|---|---|---|---|",
            f"| process start | {mib(r.get('rss_at_start'))} | – | – | before any connection |",
            f"| baseline | {mib(b.get('rss'))} | {fmt(b.get('allocated_blocks'), '{:,}')} | {b.get('tasks', '–')} | "
            "after warm-up "
            f"({a['warmup']} WS + {a['warmup']} SSE, 5 messages), `gc.collect()` |"]
    if "rss_connected" in r:
        cs = r["connected_stats"]
        out.append(f"| all connected | {mib(r['rss_connected'])} | {cs['allocated_blocks']:,} | {cs['tasks']:,} | "
                   f"{c['ws']:,} WS + {c['sse']:,} SSE, "
                   f"**{r['rss_per_conn'] / 1024:.1f} KiB per connection** over baseline |")
    h = r.get("hold")
    if h:
        out.append(f"| peak during broadcast | {mib(h['rss_peak'])} | – | – | sampled every 0.25 s |")
        out.append(f"| end of broadcast | {mib(h['rss_end'])} | – | {h['tasks_end']:,} | |")
    m = r.get("memory")
    if m:
        lv = r["leave"]
        out.append(f"| everyone left, `gc.collect()` | {mib(m['after_gc'])} | {m['allocated_blocks_after']:,} | "
                   f"{lv['tasks']} | "
                   f"{(m['after_gc'] / m['baseline'] - 1) * 100:+.1f}% vs baseline (limit +10% = {mib(m['limit'])}) |")
        out.append(f"| + `malloc_trim(0)` | {mib(m['after_gc_trim'])} | – | – | "
                   f"{(m['after_gc_trim'] / m['baseline'] - 1) * 100:+.1f}% vs baseline |")
    out.append("")
    if c:
        out += ["## Connections", "",
                f"- connected: {c['ws']:,} of {a['ws']:,} WebSockets, {c['sse']:,} of {a['sse']:,} SSE streams "
                f"in {r['connect_s']:.1f} s (concurrency {a['concurrency']}); "
                f"connect failures: {r['connect_failures']}",
                f"- server counted: {r['connected_stats']['ws_subscribers']:,} WS, "
                f"{r['connected_stats']['sse_streams']:,} SSE, {r['connected_stats']['channel_subscribers']:,} channel "
                f"subscribers, {r['connected_stats']['num_fds']:,} open fds", ""]
    if h:
        lat = h["latency_ms"]
        out += ["## Broadcast", "",
                f"{h['published']} messages published at {a['rate']} msg/s over {h['seconds']:.1f} s "
                f"(including the drain after the last publish).", "",
                "| metric | value |", "|---|---|",
                f"| expected deliveries (published × connected clients) | {h['expected_deliveries']:,} |",
                f"| received | {h['received']:,} (WS {h['ws_received']:,}, SSE {h['sse_received']:,}) |",
                f"| lost | {h['lost']:,} ({h['lost_pct']:.2f}%) |",
                f"| clients with every message / with loss | {h['clients_complete']:,} / {h['clients_with_loss']:,} |",
                f"| per client min / max | {h['min_per_client']:,} / {h['max_per_client']:,} |",
                f"| sequence gaps / duplicates seen by clients | {h['seq_gaps']:,} / {h['duplicates']:,} |",
                f"| dropped by the server's drop-oldest queues (live subscribers) | "
                f"{h['dropped_by_server_queues']:,} |",
                f"| clients closed during the hold | {h['clients_closed_during_hold']:,} |",
                f"| keepalives received (WS ping messages, SSE `: ping`) | {h['keepalives_received']:,} |",
                f"| deliveries/s | {h['deliveries_per_s']:,.0f} |",
                f"| publish→receive latency ms p50 / p95 / p99 / max ({lat['samples']:,} samples, "
                f"every {LATENCY_SAMPLE_EVERY}th client) | {fmt(lat['p50'])} / {fmt(lat['p95'])} / {fmt(lat['p99'])} "
                f"/ {fmt(lat['max'])} |",
                f"| server CPU | {h['server_cpu_s']:.1f} s = {h['server_cores']:.2f} cores |",
                f"| client CPU (load generator, same machine) | {h['client_cpu_s']:.1f} s = "
                f"{h['client_cores']:.2f} cores |", ""]
        if r["progress"]:
            out += ["Progress every 5 s:", "",
                    "| t s | published | received | received/s | RSS MiB | queued | dropped | tasks | server cores "
                    "| client cores | closed clients |",
                    "|---|---|---|---|---|---|---|---|---|---|---|"]
            for row in r["progress"]:
                out.append(f"| {row['t']} | {row['published']} | {row['received']:,} | {row['received_per_s']:,} | "
                           f"{row['rss_mib']} | {row['queued']:,} | {row['dropped']:,} | {row['tasks']:,} | "
                           f"{row['server_cpu']} | {row['client_cpu']} | {row['closed_clients']:,} |")
            out.append("")
    def settling(samples: list[dict]) -> str:
        first, last = samples[0], samples[-1]
        return (f"t={first['t']} s: {mib(first['rss'])} MiB, {first['allocated_blocks']:,} blocks → t={last['t']} s: "
                f"{mib(last['rss'])} MiB, {last['allocated_blocks']:,} blocks")

    if m and m.get("settle_samples"):
        out += [f"After everyone left (round 1), polled with `gc.collect()`: {settling(m['settle_samples'])}.", ""]
    if r.get("rounds"):
        out += ["## Further rounds (same clients reconnect, no broadcast, leave)", "",
                "If the memory kept after round 1 were leaked, every round would add to it; if it is kept by "
                "the allocators for reuse, RSS stays flat across rounds.", "",
                "| round | connected | RSS connected MiB | subscribers left | tasks left | RSS after gc MiB | "
                "RSS after trim MiB | allocated blocks |", "|---|---|---|---|---|---|---|---|"]
        if m:
            out.append(f"| 1 | {c['ws'] + c['sse']:,} | {mib(r['rss_connected'])} | "
                       f"{r['leave']['channel_subscribers']} | {r['leave']['tasks']} | {mib(m['after_gc'])} | "
                       f"{mib(m['after_gc_trim'])} | "
                       f"{m['allocated_blocks_after']:,} |")
        for row in r["rounds"]:
            out.append(f"| {row['round']} | {row['connected']:,} | {mib(row['rss_connected'])} | "
                       f"{row['channel_subscribers']} | {row['tasks']} | {mib(row['rss_after_gc'])} | "
                       f"{mib(row['rss_after_trim'])} | {row['allocated_blocks']:,} |")
        out.append("")
        for row in r["rounds"]:
            out.append(f"- round {row['round']} settling: {settling(row['settle_samples'])}")
        out.append("")
    sh = r.get("sse_headers")
    if sh and sh["streams"]:
        out += ["## SSE response headers", "",
                f"{sh['with_headers']:,} of {sh['streams']:,} SSE streams got their response headers "
                f"(refused: {sh['refused']}); time from connect to headers min / p50 / max: "
                f"{fmt(sh['min_s'], '{:.2f}')} / {fmt(sh['p50_s'], '{:.2f}')} / {fmt(sh['max_s'], '{:.2f}')} s. "
                "daphne writes the status line and headers only with the first body bytes, and an SSEView "
                "sends nothing before its first event or `: ping` (`ping_interval`, 15 s here), so a stream "
                "that connects between broadcasts waits that long for its headers (EventSource `open`).", ""]
    lv = r.get("leave")
    if lv:
        out += ["## After everyone left", "",
                f"- {lv['closed']:,} clients closed at once (TCP close, no close frame); waited {lv['seconds']:.1f} s "
                f"(bounded at {a['leave_timeout']} s) until the server held no subscriber: "
                f"channel subscribers {lv['channel_subscribers']}, WS {lv['ws_subscribers']}, "
                f"SSE {lv['sse_streams']}, asyncio tasks {lv['tasks']} (baseline {lv['baseline_tasks']}), "
                f"open fds {lv['num_fds']}", ""]
    if r["errors"]:
        out += ["## Errors", ""] + [f"- {e}" for e in r["errors"]] + [""]
    if report.get("notes"):
        out += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    pk = env["packages"]
    out.append("Packages: " + ", ".join(f"{k} {v}" for k, v in pk.items() if v))
    out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ws", type=int, default=5000, help="WebSocket clients")
    parser.add_argument("--sse", type=int, default=1000, help="SSE clients")
    parser.add_argument("--seconds", type=float, default=60, help="broadcast for this long (0: connect/leave only)")
    parser.add_argument("--rate", type=float, default=10, help="messages per second")
    parser.add_argument("--concurrency", type=int, default=100, help="connects in flight at once")
    parser.add_argument("--rounds", type=int, default=2,
                        help="connect/leave cycles; rounds after the first reconnect everyone without broadcast")
    parser.add_argument("--warmup", type=int, default=10, help="WebSockets (and SSE streams) of the warm-up")
    parser.add_argument("--connect-timeout", type=float, default=180)
    parser.add_argument("--drain-timeout", type=float, default=120,
                        help="after the last publish (stops earlier after 10 s without a delivery)")
    parser.add_argument("--pythonmalloc", default=None,
                        help="PYTHONMALLOC for the server (e.g. malloc, to tell pymalloc arenas from glibc)")
    parser.add_argument("--app", choices=sorted(APPS), default="realtime",
                        help="realtime (bench/soak/app.py) or its hand-written ASGI peer (bench/soak/peer_app.py)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment for the server, e.g. LD_PRELOAD=... for another allocator (repeatable)")
    parser.add_argument("--diagnose", action="store_true",
                        help="list objects in memory regions the baseline did not use, and pymalloc's arena totals")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                        help="with --diagnose: trace allocations, list what outlives the connections (slow)")
    parser.add_argument("--leave-timeout", type=float, default=60, help="for subscribers to go after disconnect")
    parser.add_argument("--memory-timeout", type=float, default=20, help="for RSS to come back after that")
    parser.add_argument("--output", type=Path, default=HERE / "results", help="writes OUTPUT.md and OUTPUT.json")
    parser.add_argument("--render-only", action="store_true", help="rewrite OUTPUT.md from OUTPUT.json")
    args = parser.parse_args(argv)
    if args.render_only:
        text = markdown(json.loads(args.output.with_suffix(".json").read_text()))
        args.output.with_suffix(".md").write_text(text)
        print(text)
        return 0

    needed = args.ws + args.sse + args.warmup * 2 + 256
    nofile = raise_fd_limit(needed)
    if nofile[0] < needed:
        sys.exit(f"open-files limit {nofile[0]} (hard {nofile[1]}) is below the {needed} this soak needs; "
                 "lower --ws/--sse or raise the hard limit")

    LOGS.mkdir(exist_ok=True)
    port = free_port()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t0 = time.monotonic()
    report: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "started": started, "nofile": nofile[0], "environment": environment(),
                    "client_loop": "uvloop" if uvloop is not None else "asyncio", "notes": []}
    report["args"]["output"] = os.path.relpath(args.output, REPO)
    with open(LOGS / "daphne.log", "w") as log:
        proc = start_server(port, nofile[0], log, args.pythonmalloc, args.tracemalloc, args.server_env, APPS[args.app])
        print(f"[soak] daphne PID {proc.pid} on 127.0.0.1:{port}, open-files limit {nofile[0]}", flush=True)
        try:
            wait_port(port, proc)
            report["server_nofile"] = psutil.Process(proc.pid).rlimit(psutil.RLIMIT_NOFILE)[0]
            soak = Soak(args, f"http://127.0.0.1:{port}", proc.pid)
            runner = uvloop.run if uvloop is not None else asyncio.run
            try:
                runner(soak.run())
            except Exception as exc:  # report what was measured up to the failure
                soak.error(f"soak aborted: {exc!r}")
            report["result"] = soak.result
            report["server_exit"] = proc.poll()
            if report["server_exit"] is not None:
                soak.error(f"the server exited during the soak with {report['server_exit']}")
        finally:
            stop_server(proc)
    report["elapsed_s"] = time.monotonic() - t0
    text = markdown(report)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(text)
    print(text)
    ok = report["result"].get("pass", {})
    return 0 if ok and ok.get("no_subscriber_left") and not report["result"]["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
