"""Slow-consumer scenario (issue 11): N readers plus K never-readers on one server.

    .venv/bin/python bench/slow_consumer.py [--runs 3] [--n 200] [--k 20] [--m 400] [--rate 50]

The never-readers are raw sockets with a tiny ``SO_RCVBUF`` that complete the WebSocket handshake
and never read again. While M messages of S bytes are published at a fixed rate through the
server's ``/publish``, the N readers (``bench/loadgen.py``) count deliveries and loss; this process
samples the server's RSS and each never-reader's TCP state (``TCP_INFO``, so without reading: a
socket leaves ESTABLISHED when the server's FIN or RST arrives). Each run also has a twin without
never-readers, so the readers' throughput can be compared with and without them.

Servers come from ``bench/run.py``'s ``SERVERS`` (default: ``realtime (daphne)`` and its
hand-written peer ``asgi broadcast (daphne)``), started fresh for every run with the runner's
process helpers and stopped by PID. The realtime server runs with ``SLOW_CONSUMER_TIMEOUT`` set to
``--slow-timeout`` (``BENCH_SLOW_CONSUMER_TIMEOUT``, read by ``bench/peers/realtime_settings.py``);
the peer has no such policy. Writes ``results/slow-consumer.md`` and ``results/slow-consumer.json``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import struct
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import rss_of
from bench.run import ASGI_DAPHNE, RESULTS, SERVERS, Scenario, Servers, environment, fmt, loadgen, median_of

OURS = "realtime (daphne)"
TCP_ESTABLISHED, TCP_CLOSE, TCP_CLOSE_WAIT = 1, 7, 8
SAMPLE_S = 0.05
MIB = 2**20


class NeverReader:
    """A WebSocket client that reads its handshake response and nothing else, ever."""

    def __init__(self, port: int, rcvbuf: int, timeout: float = 10.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect, so the window the server sees is small from the first segment.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.rcvbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)  # Linux doubles it
        self.closed_at: float | None = None
        self.end_state: int | None = None
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(("127.0.0.1", port))
            key = base64.b64encode(os.urandom(16))
            self.sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                              b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                              b"Sec-WebSocket-Version: 13\r\n\r\n" % (port, key))
            head = b""
            while not head.endswith(b"\r\n\r\n"):  # one byte at a time: not a byte of a frame
                byte = self.sock.recv(1)
                if not byte or len(head) > 8192:
                    raise ConnectionError(f"handshake cut short: {head[:80]!r}")
                head += byte
            if not head.startswith(b"HTTP/1.1 101"):
                raise ConnectionError(f"handshake refused: {head.splitlines()[0]!r}")
        except BaseException:
            self.sock.close()
            raise

    def state(self) -> int:
        """The kernel's TCP state of this socket (tcpi_state, the first byte of TCP_INFO)."""
        return self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]

    def leave(self) -> None:
        """Go away with a RST (linger 0), as a client that vanishes does."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()


class Sampler(threading.Thread):
    """Every SAMPLE_S: the server's RSS (peak kept) and when each never-reader stopped being open."""

    def __init__(self, pids: list[int], nevers: list[NeverReader]):
        super().__init__(daemon=True)
        self.pids, self.nevers = pids, nevers
        self.peak = rss_of(pids)
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.peak = max(self.peak, rss_of(self.pids))
            now = time.time()
            for nr in self.nevers:
                if nr.closed_at is None:
                    state = nr.state()
                    if state != TCP_ESTABLISHED:
                        nr.closed_at, nr.end_state = now, state
            self.halt.wait(SAMPLE_S)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=5)


def one_run(spec, sc: Scenario, k: int, rcvbuf: int, linger: float) -> dict:
    """A fresh server, K never-readers, then N readers and the publish (loadgen); all stopped."""
    tag = "slow_consumer-" + "".join(c if c.isalnum() else "_" for c in spec.name)
    with Servers(spec, tag) as srv:
        rss_start = rss_of(srv.pids)
        nevers: list[NeverReader] = []
        errors: list[str] = []
        try:
            deadline = time.monotonic() + 30
            while len(nevers) < k and time.monotonic() < deadline:
                try:
                    nevers.append(NeverReader(srv.ports[0], rcvbuf))
                except (OSError, ConnectionError) as exc:
                    errors.append(f"never-reader: {exc!r}"[:200])
                    time.sleep(0.2)
            sampler = Sampler(srv.pids, nevers)
            sampler.start()
            res = loadgen(sc, srv, sc.m)
            t_end = time.time()
            # The publish is over; give the server `linger` s more to close the never-readers.
            while any(nr.closed_at is None for nr in nevers) and time.time() < t_end + linger:
                time.sleep(SAMPLE_S)
            sampler.stop()
            open_at_end = sum(nr.closed_at is None for nr in nevers)
            peak = max(sampler.peak, rss_of(srv.pids))
        finally:
            for nr in nevers:
                nr.leave()
        time.sleep(1.0)  # every client has gone; let the server notice and free what it will
        rss_end = rss_of(srv.pids)
    t0 = res.get("publish_t0")
    closed = [nr for nr in nevers if nr.closed_at is not None]
    waits = sorted(nr.closed_at - t0 for nr in closed) if t0 else []
    out = {
        "server": spec.name, "k": k, "never_readers": len(nevers),
        "never_rcvbuf": nevers[0].rcvbuf if nevers else None,
        "closed_by_server": len(closed), "open_at_end": open_at_end,
        "close_rst": sum(nr.end_state == TCP_CLOSE for nr in closed),
        "close_fin": sum(nr.end_state == TCP_CLOSE_WAIT for nr in closed),
        "close_first_s": waits[0] if waits else None, "close_last_s": waits[-1] if waits else None,
        "rss_start_mib": rss_start / MIB,
        "rss_connected_mib": res["server_rss_after"] / MIB if "server_rss_after" in res else None,
        "rss_peak_mib": peak / MIB, "rss_end_mib": rss_end / MIB,
        **{key: res.get(key) for key in ("deliveries_per_s", "lost", "received", "expected", "p50_ms",
                                         "p99_ms", "wall_s", "connected", "server_cpu_util",
                                         "client_cpu_util")},
        "errors": errors + res.get("errors", []),
    }
    if out["rss_connected_mib"] is not None:
        out["rss_growth_mib"] = out["rss_peak_mib"] - out["rss_connected_mib"]
        out["rss_kept_mib"] = out["rss_end_mib"] - out["rss_connected_mib"]
    return out


METRICS = ["deliveries_per_s", "lost", "p50_ms", "p99_ms", "closed_by_server", "open_at_end",
           "close_first_s", "close_last_s", "rss_start_mib", "rss_connected_mib", "rss_peak_mib",
           "rss_growth_mib", "rss_end_mib", "rss_kept_mib", "server_cpu_util", "client_cpu_util"]


RSS_COLS = ["rss_start_mib", "rss_connected_mib", "rss_peak_mib", "rss_growth_mib", "rss_end_mib", "rss_kept_mib"]


def run_all(args) -> dict:
    by_name = {s.name: s for s in SERVERS}
    names = args.server or [OURS, ASGI_DAPHNE]
    specs = [replace(by_name[n], env={**by_name[n].env,
                                      "BENCH_SLOW_CONSUMER_TIMEOUT": str(args.slow_timeout)})
             for n in names]
    sc = Scenario("slow_consumer", "slow consumers", "ws", args.n, args.m, rate=args.rate, size=args.size)
    kept = {key: v for key, v in vars(args).items() if key not in ("out", "render_only")}  # no paths
    report = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "args": kept,
              "environment": environment(), "rows": []}
    rows = {(s.name, k): {"server": s.name, "k": k, "runs": []} for s in specs for k in (args.k, 0)}
    t_start = time.monotonic()
    # Interleaved (run 1 of every row, then run 2...), so a burst of load on the shared machine
    # lands on all rows rather than on one.
    for i in range(args.runs):
        for spec in specs:
            for k in (args.k, 0):
                t = time.monotonic()
                try:
                    r = one_run(spec, sc, k, args.rcvbuf, args.linger)
                except RuntimeError as exc:
                    r = {"server": spec.name, "k": k, "errors": [f"server failed: {exc}"]}
                rows[(spec.name, k)]["runs"].append(r)
                print(f"[slow_consumer] {spec.name} K={k} run {i + 1}: "
                      f"{r.get('deliveries_per_s') or 0:,.0f}/s lost={r.get('lost')} "
                      f"closed={r.get('closed_by_server')}/{k} "
                      f"after {fmt(r.get('close_first_s'), '{:.1f}')}–{fmt(r.get('close_last_s'), '{:.1f}')} s "
                      f"RSS {fmt(r.get('rss_connected_mib'), '{:.0f}')}→{fmt(r.get('rss_peak_mib'), '{:.0f}')}"
                      f"→{fmt(r.get('rss_end_mib'), '{:.0f}')} MiB ({time.monotonic() - t:.1f}s)"
                      + (f" errors={r['errors']}" if r.get("errors") else ""), flush=True)
    for row in rows.values():
        row["median"] = {key: median_of(row["runs"], key) for key in METRICS}
    report["rows"] = list(rows.values())
    report["ratios"] = ratios(rows, names, args.k)
    report["elapsed_s"] = time.monotonic() - t_start
    return report


def _ratio(a, b):
    return a / b if a is not None and b else None


def _minus(a, b):
    return a - b if a is not None and b is not None else None


def ratios(rows: dict, names: list[str], k: int) -> dict:
    med = {key: row["median"] for key, row in rows.items()}
    out = {"with_vs_without": {n: _ratio(med[(n, k)]["deliveries_per_s"], med[(n, 0)]["deliveries_per_s"])
                               for n in names}}
    if OURS in names and ASGI_DAPHNE in names:
        ours, peer = med[(OURS, k)], med[(ASGI_DAPHNE, k)]
        out["ours_vs_peer"] = {
            "reader_deliveries_per_s": _ratio(ours["deliveries_per_s"], peer["deliveries_per_s"]),
            "rss_growth": _ratio(ours["rss_growth_mib"], peer["rss_growth_mib"]),
            # What the never-readers add: growth with them minus growth of the same server without.
            "rss_growth_from_never_readers": _ratio(_minus(ours["rss_growth_mib"], med[(OURS, 0)]["rss_growth_mib"]),
                                                    _minus(peer["rss_growth_mib"],
                                                           med[(ASGI_DAPHNE, 0)]["rss_growth_mib"])),
        }
    return out


def markdown(report: dict) -> str:
    a, env = report["args"], report["environment"]
    lines = [
        "# Slow-consumer benchmark results (issue 11)",
        "",
        (f"Started {report['started']} · {a['runs']} runs per row, median shown · "
         f"elapsed {report['elapsed_s']:.0f} s · `bench/slow_consumer.py`"),
        "",
        (f"N={a['n']} readers (picows, `bench/loadgen.py`) and K={a['k']} never-readers (raw sockets, "
         f"SO_RCVBUF {a['rcvbuf']} B requested, handshake then no read) on one server; "
         f"M={a['m']:,} messages of {a['size']:,} B pad at {a['rate']:g} msg/s through `/publish`. "
         f"Every row is also run with K=0. realtime runs with `SLOW_CONSUMER_TIMEOUT` = "
         f"{a['slow_timeout']:g} s (default 10 s); the peer has no slow-consumer policy. A fresh "
         "server per run; rows interleaved run by run."),
        "",
        (f"Python {env['python']} on {env['cpus']} CPUs, shared with the load generator and with "
         "other engineers' test runs: single runs vary, read ratios as ±0.1."),
        "",
        ("RSS (whole server process, MiB): *start* = server idle, no client; *connected* = all "
         "N+K connected, before the publish; *peak* = highest sample (every 50 ms) from the "
         "never-readers' connect until they are gone; *growth* = peak − connected; *end* = 1 s "
         "after every client (readers and never-readers) has left; *kept* = end − connected. "
         "*closed* = never-readers whose socket left ESTABLISHED (server's FIN or RST) during the "
         f"publish or {a['linger']:g} s after it; *after* = seconds from the `/publish` request "
         "to the first / last of those (RST: the server aborted the connection; FIN: it closed it); "
         "the others are closed by the client (RST) at the end. Fixed rate: reader deliveries/s "
         "can only fall below N × rate when the server falls behind; server cores and p99 show "
         "the cost before that."),
        "",
        "| server | K | reader deliveries/s | lost | p50 ms | p99 ms | closed | after s (first–last) "
        "| RSS start | connected | peak | growth | end | kept | server cores |",
        "|---" * 15 + "|",
    ]
    for row in report["rows"]:
        m = row["median"]
        errors = sorted({e for r in row["runs"] for e in r.get("errors", [])})
        how = [f"{sum(r.get(f'close_{x}', 0) for r in row['runs'])} {x.upper()}" for x in ("rst", "fin")]
        closed = "–"
        if row["k"]:
            closed = f"{fmt(m['closed_by_server'], '{:.0f}')}/{row['k']}"
            if m["closed_by_server"]:
                closed += f" ({', '.join(how)} over {len(row['runs'])} runs)"
        after = (f"{fmt(m['close_first_s'], '{:.1f}')}–{fmt(m['close_last_s'], '{:.1f}')}"
                 if row["k"] and m["close_first_s"] is not None else "–")
        name = f"**{row['server']}** (ours)" if row["server"] == OURS else row["server"]
        cells = [name, str(row["k"]), fmt(m["deliveries_per_s"], "{:,.0f}"), fmt(m["lost"], "{:,.0f}"),
                 fmt(m["p50_ms"], "{:.1f}"), fmt(m["p99_ms"], "{:.1f}"), closed, after,
                 *(fmt(m[c], "{:.1f}") for c in RSS_COLS), fmt(m["server_cpu_util"], "{:.2f}")]
        lines.append("| " + " | ".join(cells) + " |" + (f" errors: {'; '.join(errors)[:200]}" if errors else ""))
    r = report["ratios"]
    lines += ["", "Ratios of medians:", ""]
    for name, v in r["with_vs_without"].items():
        target = " (issue 16 target: ≥ 0.90)" if name == OURS else ""
        lines.append(f"- {name}: reader deliveries/s with K={a['k']} never-readers ÷ without = "
                     f"**{fmt(v, '{:.2f}')}**{target}")
    if "ours_vs_peer" in r:
        o = r["ours_vs_peer"]
        lines.append(f"- {OURS} ÷ {ASGI_DAPHNE}, with never-readers: reader deliveries/s "
                     f"**{fmt(o['reader_deliveries_per_s'], '{:.2f}')}**, RSS growth "
                     f"**{fmt(o['rss_growth'], '{:.2f}')}**; RSS growth the never-readers add (growth "
                     f"with K={a['k']} − growth with K=0, each server) "
                     f"**{fmt(o.get('rss_growth_from_never_readers'), '{:.2f}')}**")
    per_run = [f"{row['server']} K={row['k']}: " + ", ".join(
        fmt(x.get("deliveries_per_s"), "{:,.0f}") for x in row["runs"]) for row in report["rows"]]
    lines += ["", "Reader deliveries/s per run: " + "; ".join(per_run) + ".", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n", type=int, default=200, help="readers")
    parser.add_argument("--k", type=int, default=20, help="never-readers")
    parser.add_argument("--m", type=int, default=400, help="messages")
    parser.add_argument("--size", type=int, default=10240, help="pad bytes per message")
    parser.add_argument("--rate", type=float, default=50.0, help="msg/s (fixed)")
    parser.add_argument("--rcvbuf", type=int, default=4096, help="never-readers' SO_RCVBUF, bytes")
    parser.add_argument("--slow-timeout", type=float, default=2.0,
                        help="realtime's SLOW_CONSUMER_TIMEOUT for these runs, seconds")
    parser.add_argument("--linger", type=float, default=2.0,
                        help="seconds after the publish the server still has to close never-readers")
    parser.add_argument("--server", action="append", default=[],
                        help=f"a SERVERS name from bench/run.py (repeatable; default {OURS!r} and "
                        f"{ASGI_DAPHNE!r})")
    parser.add_argument("--out", default=str(RESULTS), help="output directory")
    parser.add_argument("--render-only", action="store_true",
                        help="re-render slow-consumer.md from slow-consumer.json, run nothing")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        report = json.loads((out / "slow-consumer.json").read_text())
        rows = {(row["server"], row["k"]): row for row in report["rows"]}
        names = list(dict.fromkeys(row["server"] for row in report["rows"]))
        report["ratios"] = ratios(rows, names, report["args"]["k"])
        (out / "slow-consumer.json").write_text(json.dumps(report, indent=1) + "\n")
    else:
        report = run_all(args)
        (out / "slow-consumer.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "slow-consumer.md").write_text(markdown(report))
    print(f"done in {report['elapsed_s']:.0f} s: wrote {out / 'slow-consumer.md'} and slow-consumer.json",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
