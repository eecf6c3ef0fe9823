"""Fan-out benchmark runner: starts each server, drives bench/loadgen.py against it, writes results.

    .venv/bin/python bench/run.py [--quick] [--runs 3] [--only NAME] [--scenario KEY]

Adding a server = one ``ServerSpec`` entry in ``SERVERS`` (see bench/README.md). The
slow-consumer scenario, ``bench/slow_consumer.py``, runs entries of ``SERVERS`` with these helpers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Self

import psutil

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
LOGS = RESULTS / "logs"
PY = "{python}"


@dataclass
class ServerSpec:
    """One server under test. ``cmd`` may use ``{python}`` and ``{port}``; it runs from the repo root."""

    name: str
    kind: str  # "ws" or "sse"
    cmd: list[str]
    processes: int = 1  # 2 = two copies on two ports sharing Redis; subscribers split evenly
    needs_redis: bool = False
    env: dict[str, str] = field(default_factory=dict)
    ours: bool = False  # the project's own server: ratios against compare_to are highlighted
    compare_to: list[str] = field(default_factory=list)  # names of reference rows, same scenario
    notes: str = ""
    scenarios: list[str] = field(default_factory=list)  # only these scenario keys (empty = all)
    broker: str = ""  # a broker of the row's own: "nats" (bench/nats_broker.py, NATS_URL) or "redis-cluster"
    topics: int = 0  # > 0: TopicSocket clients (/topics), each subscribed to this many channels


def daphne(app: str) -> list[str]:
    return [PY, "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", "{port}", app]


def uvicorn(app: str) -> list[str]:
    # uvicorn's defaults: uvloop + httptools + websockets when installed (they are, see requirements).
    return [PY, "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}",
            "--log-level", "warning", "--no-access-log", app]


ASGI_DAPHNE = "asgi broadcast (daphne)"
CHANNELS_DAPHNE = "channels idiom (daphne)"
CHANNELS_REDIS = "channels idiom + redis pubsub (2x daphne)"
SSE_STARLETTE = "sse-starlette (uvicorn)"
ASGI_UVICORN = "asgi broadcast (uvicorn)"
CHANNELS_UVICORN = "channels idiom (uvicorn)"
DJANGO_STREAMING = "django streaming (daphne)"
PICOWS = "picows broadcast (uvloop)"
OURS = "bench.peers.realtime_app:application"
REDIS_URL = "redis://127.0.0.1:6379/0"

SERVERS: list[ServerSpec] = [
    ServerSpec(CHANNELS_DAPHNE, "ws", daphne("bench.peers.channels_idiom:application"),
               compare_to=[ASGI_DAPHNE],
               notes="AsyncJsonWebsocketConsumer + group_send, InMemoryChannelLayer (defaults)"),
    ServerSpec(ASGI_DAPHNE, "ws", daphne("bench.peers.asgi_broadcast:application"),
               notes="bare ASGI app, set of send callables"),
    ServerSpec(ASGI_UVICORN, "ws", uvicorn("bench.peers.asgi_broadcast:application"),
               compare_to=[ASGI_DAPHNE]),
    ServerSpec(CHANNELS_UVICORN, "ws", uvicorn("bench.peers.channels_idiom:application"),
               scenarios=["ws_idle"], notes="the Channels idiom on uvicorn, idle memory only"),
    ServerSpec("websockets.broadcast", "ws",
               [PY, "-m", "bench.peers.websockets_broadcast", "--port", "{port}"],
               compare_to=[ASGI_DAPHNE], notes="websockets asyncio server, stdlib event loop"),
    ServerSpec(PICOWS, "ws", [PY, "-m", "bench.peers.picows_broadcast", "--port", "{port}"],
               compare_to=[ASGI_UVICORN],
               notes="picows server on uvloop, framing in C, transport.send to every client"),
    ServerSpec(CHANNELS_REDIS, "ws", daphne("bench.peers.channels_idiom:application"),
               processes=2, needs_redis=True, env={"BENCH_CHANNEL_LAYER": "redis_pubsub"},
               notes="channels_redis.pubsub.RedisPubSubChannelLayer"),
    ServerSpec(SSE_STARLETTE, "sse", uvicorn("bench.peers.sse_starlette_peer:app")),
    ServerSpec(DJANGO_STREAMING, "sse",
               daphne("bench.peers.django_streaming:application"), compare_to=[SSE_STARLETTE],
               notes="async StreamingHttpResponse, per-subscriber asyncio.Queue"),
    # The project's own server (bench/peers/realtime_app.py): CoreApp + WebSocketView/SSEView
    # iterating Channel.subscribe(), publishing through Channel.publish.
    ServerSpec("realtime (daphne)", "ws", daphne(OURS), ours=True,
               compare_to=[ASGI_DAPHNE, CHANNELS_DAPHNE]),
    ServerSpec("realtime (uvicorn)", "ws", uvicorn(OURS), ours=True,
               compare_to=[ASGI_UVICORN, CHANNELS_UVICORN]),
    ServerSpec("realtime relay (daphne)", "ws", daphne(OURS), env={"BENCH_RELAY": "1"}, ours=True,
               compare_to=[ASGI_DAPHNE, "realtime (daphne)", PICOWS],
               notes="relay = CHANNEL: frames built once per publish, written to each transport"),
    ServerSpec("realtime relay (uvicorn)", "ws", uvicorn(OURS), env={"BENCH_RELAY": "1"}, ours=True,
               compare_to=[ASGI_UVICORN, "realtime (uvicorn)", PICOWS],
               notes="relay = CHANNEL on uvicorn: frames built once per publish, written to each transport"),
    ServerSpec("realtime TopicSocket (daphne)", "ws", daphne(OURS), topics=1, ours=True,
               compare_to=["realtime relay (daphne)"], scenarios=["ws_fanout", "ws_topics_many"],
               notes="TopicSocket on /topics, each socket subscribed to bench:0 (or bench:0..99)"),
    ServerSpec("realtime TopicSocket (uvicorn)", "ws", uvicorn(OURS), topics=1, ours=True,
               compare_to=["realtime relay (uvicorn)"], scenarios=["ws_fanout", "ws_topics_many"],
               notes="TopicSocket on /topics, each socket subscribed to bench:0 (or bench:0..99)"),
    ServerSpec("realtime + redis pubsub (2x daphne)", "ws", daphne(OURS), processes=2,
               needs_redis=True, env={"REDIS_URL": REDIS_URL}, ours=True,
               compare_to=[CHANNELS_REDIS],
               notes="Channel over channels_redis RedisPubSubChannelLayer, one bridge per process"),
    ServerSpec("realtime relay + redis pubsub (2x daphne)", "ws", daphne(OURS), processes=2,
               needs_redis=True, env={"REDIS_URL": REDIS_URL, "BENCH_RELAY": "1"}, ours=True,
               compare_to=[CHANNELS_REDIS, "realtime + redis pubsub (2x daphne)"],
               notes="relay = CHANNEL over channels_redis: direct frames in each process"),
    ServerSpec("realtime relay + nats (2x daphne)", "ws", daphne(OURS), processes=2,
               env={"BENCH_RELAY": "1"}, broker="nats", ours=True,
               compare_to=["realtime relay + redis pubsub (2x daphne)"],
               notes="relay = CHANNEL over realtime.pubsub.nats.NatsChannelLayer, a nats-server of its own; "
                     "its CPU is the \"redis cores\" column"),
    ServerSpec("realtime relay + redis cluster (2x daphne)", "ws", daphne(OURS), processes=2,
               needs_redis=True, broker="redis-cluster", env={"BENCH_RELAY": "1"}, ours=True,
               compare_to=["realtime relay + redis pubsub (2x daphne)"],
               notes="relay = CHANNEL over realtime.pubsub.sharded (SPUBLISH/SSUBSCRIBE) on a 3-master cluster "
                     "started by the bench; commands and CPU summed over its six nodes"),
    ServerSpec("realtime SSE (daphne)", "sse", daphne(OURS), ours=True,
               compare_to=[DJANGO_STREAMING, SSE_STARLETTE]),
    ServerSpec("realtime SSE (uvicorn)", "sse", uvicorn(OURS), ours=True,
               compare_to=[SSE_STARLETTE, DJANGO_STREAMING]),
    ServerSpec("realtime SSE relay (daphne)", "sse", daphne(OURS), env={"BENCH_RELAY": "1"}, ours=True,
               compare_to=[DJANGO_STREAMING, "realtime SSE (daphne)"],
               notes="relay = CHANNEL: frames built once per publish, written to each response"),
    ServerSpec("realtime SSE relay (uvicorn)", "sse", uvicorn(OURS), env={"BENCH_RELAY": "1"}, ours=True,
               compare_to=[SSE_STARLETTE, "realtime SSE (uvicorn)"],
               notes="relay = CHANNEL on uvicorn: one queue drained by the response, no direct write"),
]


@dataclass
class Scenario:
    key: str
    title: str
    kind: str
    n: int
    m: int
    rate: float = 0.0
    size: int = 64
    processes: int = 1
    headline: str = "deliveries_per_s"  # metric used for the ratio column
    higher_is_better: bool = True
    fresh_per_run: bool = False  # restart the server before every run (memory scenarios)
    quick: dict = field(default_factory=dict)  # overrides applied by --quick (said in the output)
    topics: int = 0  # > 0: only TopicSocket rows, each socket subscribed to this many channels


SCENARIOS: list[Scenario] = [
    Scenario("ws_fanout", "WebSocket fan-out, 1,000 subscribers x 200 messages, flat out",
             "ws", 1000, 200, quick={"m": 50}),
    Scenario("ws_burst", "WebSocket, 100 subscribers x 2,000 messages, flat out",
             "ws", 100, 2000, quick={"m": 500}),
    Scenario("ws_latency", "WebSocket latency, 100 subscribers at 20 msg/s for 200 messages",
             "ws", 100, 200, rate=20, headline="p99_ms", higher_is_better=False),
    Scenario("ws_idle", "Memory, 5,000 idle WebSockets", "ws", 5000, 0,
             headline="rss_per_conn_kib", higher_is_better=False, fresh_per_run=True),
    Scenario("ws_redis_2proc",
             "Two processes sharing Redis, 1,000 subscribers x 200 messages, flat out",
             "ws", 1000, 200, processes=2),
    Scenario("sse_fanout", "SSE fan-out, 1,000 subscribers x 200 messages, flat out",
             "sse", 1000, 200),
    Scenario("ws_topics_many", "TopicSocket, one socket x 100 channels x 2,000 messages, flat out",
             "ws", 1, 2000, topics=100, quick={"m": 500}),
]

# Columns of the markdown tables: (result key, header, format)
THROUGHPUT_COLS = [
    ("deliveries_per_s", "deliveries/s", "{:,.0f}"),
    ("p50_ms", "p50 ms", "{:,.1f}"),
    ("p95_ms", "p95 ms", "{:,.1f}"),
    ("p99_ms", "p99 ms", "{:,.1f}"),
    ("lost", "lost", "{:,.0f}"),
    ("connect_s", "connect s", "{:.2f}"),
    ("server_cpu_s", "server CPU s", "{:.2f}"),
    ("server_cpu_us_per_delivery", "CPU µs/delivery", "{:.1f}"),
    ("server_cpu_util", "server cores", "{:.2f}"),
    ("client_cpu_util", "client cores", "{:.2f}"),
    ("aux_cpu_util", "redis cores", "{:.2f}"),
    ("redis_cmds_per_msg", "redis cmds/msg", "{:.2f}"),
    ("nats_in_per_msg", "nats msgs in/msg", "{:.2f}"),
    ("nats_out_per_msg", "nats msgs out/msg", "{:.2f}"),
    ("aux_cpu_us_per_msg", "broker CPU µs/msg", "{:.0f}"),
]
IDLE_COLS = [
    ("connected", "connected", "{:,.0f}"),
    ("connect_s", "connect s", "{:.2f}"),
    ("rss_per_conn_kib", "RSS KiB/conn", "{:.1f}"),
    ("server_rss_after_mib", "server RSS MiB", "{:.1f}"),
]
SATURATION = 0.85  # fraction of a core (per process) counted as "saturated"


# ----------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} not listening after {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    """Stop a server by its PID and its children: SIGTERM, then SIGKILL after 5 s."""
    try:
        parent = psutil.Process(proc.pid)
        family = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def nats_broker():
    """bench/nats_broker.py, whether this file runs as a script (bench/ on sys.path) or as ``bench.run``."""
    try:
        from bench import nats_broker as module
    except ImportError:
        import nats_broker as module
    return module


class Servers:
    """Context manager: start ``spec.processes`` copies of a server, always stop them.

    A ``broker="redis-cluster"`` spec gets a Redis Cluster of its own first (``tests/redis_cluster.py``, six nodes
    on free loopback ports, never the shared Redis), as its ``REDIS_URL``; stopped last.
    """

    def __init__(self, spec: ServerSpec, tag: str):
        self.spec, self.tag = spec, tag
        self.procs: list[subprocess.Popen] = []
        self.ports: list[int] = []
        self.logs: list = []
        self.broker = None  # bench.nats_broker.NatsBroker for a row with broker="nats"
        self.cluster = None
        self._cluster_dir = None
        #: Redis nodes whose INFO commandstats the load generator sums, and processes whose CPU it reports.
        self.redis_nodes = ["127.0.0.1:6379"]
        self.aux_pids: list[int] = []

    def __enter__(self) -> Self:
        env = dict(os.environ)
        env.pop("DJANGO_SETTINGS_MODULE", None)  # peers bring their own settings
        env.update(self.spec.env, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        LOGS.mkdir(parents=True, exist_ok=True)
        try:
            if self.spec.broker == "nats":
                self.broker = nats_broker().NatsBroker().start()
                env["NATS_URL"] = self.broker.url
                self.aux_pids = [self.broker.pid]
            elif self.spec.broker == "redis-cluster":
                import tempfile

                if str(REPO) not in sys.path:
                    sys.path.insert(0, str(REPO))
                from tests.redis_cluster import RedisCluster

                self._cluster_dir = tempfile.TemporaryDirectory(prefix="bench-cluster-")
                self.cluster = RedisCluster(Path(self._cluster_dir.name)).start()
                env["REDIS_URL"] = self.cluster.url
                self.redis_nodes = [f"127.0.0.1:{port}" for port in self.cluster.ports]
                self.aux_pids = [process.pid for process in self.cluster.processes.values()]
            elif self.spec.needs_redis:
                self.aux_pids = redis_pids()
            for i in range(self.spec.processes):
                port = free_port()
                cmd = [a.replace("{python}", sys.executable).replace("{port}", str(port))
                       for a in self.spec.cmd]
                log = open(LOGS / f"{self.tag}-{i}.log", "w")  # closed in __exit__
                self.logs.append(log)
                self.procs.append(subprocess.Popen(
                    cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True))
                self.ports.append(port)
            for port, proc in zip(self.ports, self.procs, strict=True):
                wait_port(port, proc)
            time.sleep(0.3)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            stop(proc)
        for log in self.logs:
            log.close()
        if self.broker is not None:
            self.broker.stop()
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None
        if self._cluster_dir is not None:
            self._cluster_dir.cleanup()
            self._cluster_dir = None


def redis_ok() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_pids() -> list[int]:
    """redis-server processes on this machine, to report their CPU next to the servers'."""
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "redis-server"]


# ----------------------------------------------------------------------------- running


def loadgen(sc: Scenario, servers: Servers, m: int) -> dict:
    topics = sc.topics or servers.spec.topics
    cmd = [sys.executable, str(BENCH / "loadgen.py"), "--kind", sc.kind, "--topics", str(topics),
           "--n", str(sc.n), "--m", str(m), "--rate", str(sc.rate), "--size", str(sc.size),
           "--timeout", "180", "--connect-timeout", "120", "--wait-timeout", "30"]
    for url in servers.urls:
        cmd += ["--url", url]
    for pid in servers.pids:
        cmd += ["--server-pid", str(pid)]
    if servers.spec.needs_redis:
        for node in servers.redis_nodes:
            cmd += ["--redis-stats", node]
    for pid in servers.aux_pids:  # the broker's processes: shared Redis, the row's cluster or nats-server
        cmd += ["--aux-pid", str(pid)]
    try:
        out = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=400,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"errors": ["loadgen timed out (400 s)"]}
    if out.returncode != 0:
        return {"errors": [f"loadgen exit {out.returncode}: {out.stderr.strip()[-500:]}"]}
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["rss_per_conn_kib"] = res["rss_per_conn"] / 1024
    res["server_rss_after_mib"] = res["server_rss_after"] / 2**20
    return res


def saturation(res: dict, processes: int) -> str:
    srv, cli = res.get("server_cpu_util"), res.get("client_cpu_util")
    if srv is None or cli is None:
        return ""
    aux = res.get("aux_cpu_util") or 0.0
    sides = []
    if srv >= SATURATION * processes:
        sides.append("server")
    if cli >= SATURATION:
        sides.append("client")
    if srv + cli + aux >= SATURATION * (os.cpu_count() or 2) and not sides:
        sides.append("machine")
    return "+".join(sides) or "neither"


def median_of(runs: list[dict], key: str):
    vals = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
    return statistics.median(vals) if vals else None


def run_matrix(args) -> dict:
    servers = [s for s in SERVERS if not args.only
               or any(o.lower() in s.name.lower() for o in args.only)]
    scenarios = [s for s in SCENARIOS if not args.scenario or s.key in args.scenario]
    have_redis = redis_ok()
    report = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick, "runs": args.runs, "environment": environment(),
        "servers": [asdict(s) for s in servers], "scenarios": [],
    }
    t_start = time.monotonic()
    for sc in scenarios:
        m = sc.quick.get("m", sc.m) if args.quick else sc.m
        entry = {**asdict(sc), "m_used": m, "rows": []}
        if m != sc.m:
            entry["reduced"] = f"--quick: M reduced from {sc.m} to {m}"
        report["scenarios"].append(entry)
        for spec in servers:
            if spec.kind != sc.kind or spec.processes != sc.processes:
                continue
            if spec.scenarios and sc.key not in spec.scenarios:
                continue
            if sc.topics and not spec.topics:
                continue
            row = {"server": spec.name, "ours": spec.ours, "compare_to": spec.compare_to,
                   "processes": spec.processes, "runs": [], "skipped": None}
            entry["rows"].append(row)
            if spec.needs_redis and not have_redis:
                row["skipped"] = "Redis not reachable at 127.0.0.1:6379"
                print(f"[skip] {sc.key} / {spec.name}: {row['skipped']}", flush=True)
                continue
            tag = f"{sc.key}-{''.join(c if c.isalnum() else '_' for c in spec.name)}"
            try:
                if sc.fresh_per_run:
                    for i in range(args.runs):
                        with Servers(spec, tag) as srv:
                            row["runs"].append(one_run(sc, spec, srv, m, i))
                else:
                    with Servers(spec, tag) as srv:
                        for i in range(args.runs):
                            row["runs"].append(one_run(sc, spec, srv, m, i))
            except RuntimeError as exc:
                row["skipped"] = f"server failed: {exc}"
                print(f"[fail] {sc.key} / {spec.name}: {exc}", flush=True)
            good = [r for r in row["runs"] if "deliveries_per_s" in r or sc.m == 0]
            row["median"] = {k: median_of(good, k) for k in
                             {c[0] for c in THROUGHPUT_COLS + IDLE_COLS} | {"received", "expected"}}
            row["saturated"] = saturation(row["median"], spec.processes) if m else ""
    for sc in report["scenarios"]:
        add_ratios(sc)
    report["elapsed_s"] = time.monotonic() - t_start
    return report


def one_run(sc: Scenario, spec: ServerSpec, srv: Servers, m: int, i: int) -> dict:
    t = time.monotonic()
    before = srv.broker.varz() if srv.broker is not None and m else None
    res = loadgen(sc, srv, m)
    if before is not None and "deliveries_per_s" in res:
        res.update(nats_broker().per_message(before, srv.broker.varz(), m))
    res["saturated"] = saturation(res, spec.processes) if m else ""
    summary = (f"{res.get('deliveries_per_s', 0):,.0f}/s p99={res.get('p99_ms') or 0:.1f}ms "
               f"lost={res.get('lost')} srv={res.get('server_cpu_util', 0):.2f} "
               f"cli={res.get('client_cpu_util', 0):.2f}") if m else (
        f"{res.get('connected')} conns, {res.get('rss_per_conn_kib', 0):.1f} KiB/conn, "
        f"connect {res.get('connect_s', 0):.1f}s")
    errs = f" errors={res['errors']}" if res.get("errors") else ""
    print(f"[{sc.key}] {spec.name} run {i + 1}: {summary} ({time.monotonic() - t:.1f}s){errs}",
          flush=True)
    return res


def add_ratios(sc: dict) -> None:
    by_name = {r["server"]: r for r in sc["rows"]}
    key = sc["headline"]
    for row in sc["rows"]:
        ratios = {}
        mine = (row.get("median") or {}).get(key)
        for ref in row["compare_to"]:
            other = (by_name.get(ref, {}).get("median") or {}).get(key)
            if mine is not None and other:
                ratios[ref] = mine / other
        row["ratios"] = ratios


def environment() -> dict:
    pkgs = {}
    for name in ["django", "channels", "channels-redis", "daphne", "twisted", "autobahn",
                 "websockets", "uvicorn", "uvloop", "httptools", "starlette", "sse-starlette",
                 "picows", "psutil"]:
        try:
            pkgs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pkgs[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "packages": pkgs}


# ----------------------------------------------------------------------------- output


def fmt(value, pattern: str) -> str:
    if value is None:
        return "–"
    return pattern.format(value)


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# Fan-out benchmark results",
        "",
        (f"Started {report['started']} · {'--quick' if report['quick'] else 'full'} · "
         f"{report['runs']} runs per server, median shown · "
         f"elapsed {report['elapsed_s']:.0f} s"),
        "",
        (f"Python {env['python']} on {env['cpus']} CPUs; load generator (picows + uvloop for "
         "WebSocket, raw asyncio protocol for SSE) shares the machine with the server. "
         "\"server cores\"/\"client cores\" are CPU seconds divided by wall time during the "
         f"publish phase; ≥ {SATURATION} per process counts as saturated."),
        "",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v),
        "",
    ]
    for sc in report["scenarios"]:
        idle = sc["m_used"] == 0
        cols = [c for c in (IDLE_COLS if idle else THROUGHPUT_COLS)
                if any((r.get("median") or {}).get(c[0]) is not None for r in sc["rows"])]
        lines += [f"## {sc['title']}", ""]
        desc = (f"`{sc['key']}`: N={sc['n']:,}, M={sc['m_used']:,}, "
                f"{'rate ' + str(sc['rate']) + ' msg/s' if sc['rate'] else 'flat out'}, "
                f"pad {sc['size']} B, {sc['processes']} server process(es)")
        if idle:
            desc = (f"`{sc['key']}`: {sc['n']:,} connections opened, server RSS measured, "
                    "closed; fresh server per run")
        lines.append(desc + ".")
        if sc["rate"]:
            lines.append("deliveries/s here is bounded by the publish rate; compare latency.")
        if sc.get("reduced"):
            lines.append(f"**Reduced size:** {sc['reduced']} to fit the 10-minute budget.")
        direction = "higher" if sc["higher_is_better"] else "lower"
        lines += ["", "| server | " + " | ".join(c[1] for c in cols)
                  + ("" if idle else " | saturated")
                  + f" | ratio of {sc['headline']} ({direction} is better) |",
                  "|---" * (len(cols) + (1 if idle else 2) + 1) + "|"]
        for row in sc["rows"]:
            name = f"**{row['server']}** (ours)" if row["ours"] else row["server"]
            if row.get("skipped") and not row["runs"]:
                lines.append(f"| {name} | skipped: {row['skipped']} |")
                continue
            med = row["median"]
            cells = [fmt(med.get(k), p) for k, _, p in cols]
            ratio = "; ".join(f"{v:.2f}× {k}" for k, v in row["ratios"].items()) or "–"
            errors = sorted({e for r in row["runs"] for e in r.get("errors", [])})
            if errors:
                ratio += " · errors: " + "; ".join(errors)[:200]
            lines.append(f"| {name} | " + " | ".join(cells)
                         + ("" if idle else f" | {row['saturated']}") + f" | {ratio} |")
        counted = [(row["server"], r["redis_commands"]) for row in sc["rows"]
                   for r in row["runs"][-1:] if r.get("redis_commands") is not None]
        if counted:
            lines += ["", f"Redis commands during the publish phase (INFO commandstats before/after, "
                      f"last run, M={sc['m_used']:,} messages, N={sc['n']:,} subscribers):", ""]
            for server, cmds in counted:
                per = ", ".join(f"{k} {v:,} ({v / sc['m_used']:.2f}/msg)" for k, v in cmds.items())
                lines.append(f"- {server}: {per or 'none'}")
        lines.append("")
    return "\n".join(lines)


def chart(report: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        print("matplotlib not installed: no chart", flush=True)
        return False
    picks = [s for s in report["scenarios"]
             if s["key"] in ("ws_fanout", "ws_redis_2proc", "sse_fanout")]
    names, rates, p99s, colors = [], [], [], []
    palette = {"ws_fanout": "tab:blue", "ws_redis_2proc": "tab:purple", "sse_fanout": "tab:green"}
    for sc in picks:
        for row in sc["rows"]:
            med = row.get("median") or {}
            if med.get("deliveries_per_s") is None:
                continue
            label = row["server"] + (" ★" if row["ours"] else "")
            names.append(f"{label}\n[{sc['key']}, M={sc['m_used']}]")
            rates.append(med["deliveries_per_s"])
            p99s.append(med.get("p99_ms") or 0)
            colors.append(palette[sc["key"]])
    if not names:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 0.6 * len(names) + 2), sharey=True)
    y = list(range(len(names)))
    ax1.barh(y, rates, color=colors)
    ax1.set_yticks(y, names, fontsize=8)
    ax1.invert_yaxis()
    ax1.set_xlabel("deliveries/s (higher is better)")
    ax1.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    for yi, v in zip(y, rates, strict=True):
        ax1.text(v, yi, f" {v:,.0f}", va="center", fontsize=8)
    ax2.barh(y, p99s, color=colors)
    ax2.set_xlabel("p99 publish→receive latency, ms (lower is better)")
    ax2.set_xscale("log")
    ax2.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax2.xaxis.set_minor_formatter(NullFormatter())
    for yi, v in zip(y, p99s, strict=True):
        ax2.text(v, yi, f" {v:,.1f}", va="center", fontsize=8)
    n = picks[0]["n"]
    fig.suptitle(f"Fan-out to {n:,} subscribers, flat out, median of {report['runs']} runs"
                 f"{' (--quick)' if report['quick'] else ''}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller M where needed so the whole matrix fits in 10 minutes")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", action="append", default=[],
                        help="run only servers whose name contains this (repeatable)")
    parser.add_argument("--scenario", action="append", default=[],
                        help="run only this scenario key (repeatable): "
                        + ", ".join(s.key for s in SCENARIOS))
    parser.add_argument("--out", default=str(RESULTS), help="output directory")
    parser.add_argument("--render-only", action="store_true",
                        help="re-render latest.md and fanout.png from latest.json, run nothing")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        report = json.loads((out / "latest.json").read_text())
        headlines = {s.key: s.headline for s in SCENARIOS}
        for sc in report["scenarios"]:
            sc["headline"] = headlines.get(sc["key"], sc["headline"])
            add_ratios(sc)
    else:
        report = run_matrix(args)
    (out / "latest.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "latest.md").write_text(markdown(report))
    chart(report, out / "fanout.png")
    print(f"done in {report['elapsed_s']:.0f} s: wrote {out / 'latest.md'}, latest.json, "
          "fanout.png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
