"""Load generator for the fan-out benchmark (WebSocket via picows, SSE via a raw asyncio protocol).

Opens N subscribers (bounded connect concurrency), waits until all are connected
(client side, and server side through ``GET /stats`` when the server has it),
measures the server's RSS per idle connection, triggers ``GET /publish`` on the
first server and collects every message until all N*M arrived, nothing arrived
for ``--idle-timeout`` seconds, or ``--timeout`` expired. Prints one JSON object.

Everything is bounded: connect, wait and receive phases each have hard timeouts.

    python bench/loadgen.py --kind ws --url http://127.0.0.1:8001 --n 1000 --m 200 \
        --server-pid 1234
"""

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import psutil

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

try:
    import uvloop
except ImportError:  # pragma: no cover - optional speed-up
    uvloop = None

import picows
from picows import WSListener, WSMsgType, ws_connect

# Every received message: (receive wall-clock time, raw JSON bytes). Parsed after the run.
RECEIVED: list = []


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --------------------------------------------------------------------------- clients


class WsListener(WSListener):
    __slots__ = ()

    def on_ws_frame(self, transport, frame):
        if frame.msg_type == WSMsgType.TEXT:
            RECEIVED.append((time.time(), frame.get_payload_as_bytes()))
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.disconnect()


#: ``--topics K``: each socket opens ``/topics`` (a TopicSocket) and subscribes to ``bench:0`` .. ``bench:K-1``.
TOPICS = 0
TOPIC_MESSAGE = b'{"op":"message"'


class TopicListener(WSListener):
    """A TopicSocket client: subscribes once connected, records every ``message`` frame (not the replies)."""

    __slots__ = ()

    def on_ws_connected(self, transport):
        for i in range(TOPICS):
            transport.send(WSMsgType.TEXT, b'{"op":"subscribe","ref":"%d","channel":"bench:%d"}' % (i, i))

    def on_ws_frame(self, transport, frame):
        if frame.msg_type == WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()
            if payload.startswith(TOPIC_MESSAGE):
                RECEIVED.append((time.time(), payload))
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.disconnect()


async def open_ws(base: str):
    path, listener = ("/topics", TopicListener) if TOPICS else ("/ws", WsListener)
    url = base.replace("http://", "ws://", 1) + path
    transport, _ = await ws_connect(listener, url, websocket_handshake_timeout=30)
    return transport


def close_ws(transport) -> None:
    transport.disconnect(graceful=False)


class SseProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 client for ``GET /sse``: headers, optional chunked body, ``data:`` lines."""

    def __init__(self, host: str, ready: asyncio.Future):
        self.host = host
        self.ready = ready
        self.transport = None
        self.head = b""
        self.headers_done = False
        self.chunked = False
        self.raw = b""  # undecoded chunked bytes
        self.chunk_left = 0  # bytes of the current chunk still to read (+2 for CRLF handled)
        self.text = b""  # decoded body, incomplete last line

    def connection_made(self, transport):
        self.transport = transport
        transport.write(
            b"GET /sse HTTP/1.1\r\nHost: " + self.host.encode()
            + b"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        )

    def data_received(self, data: bytes):
        if not self.headers_done:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end], self.head[end + 4:]
            self.head = b""
            self.headers_done = True
            status_line, _, rest = head.partition(b"\r\n")
            if b" 200" not in status_line:
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(status_line.decode(errors="replace")))
                self.transport.close()
                return
            self.chunked = b"transfer-encoding: chunked" in rest.lower()
            if not self.ready.done():
                self.ready.set_result(self.transport)
            if not data:
                return
        if self.chunked:
            data = self._dechunk(data)
        self._lines(data)

    def _dechunk(self, data: bytes) -> bytes:
        buf = self.raw + data if self.raw else data
        out = []
        pos = 0
        n = len(buf)
        while pos < n:
            if self.chunk_left > 0:
                take = min(self.chunk_left, n - pos)
                out.append(buf[pos:pos + take])
                pos += take
                self.chunk_left -= take
                if self.chunk_left == 0:
                    self.chunk_left = -2  # a chunk split across reads still ends with CRLF
                continue
            if self.chunk_left < 0:  # trailing CRLF of the previous chunk
                need = -self.chunk_left
                if n - pos < need:
                    break
                pos += need
                self.chunk_left = 0
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
            pos = eol + 2
            if size == 0:
                self.transport.close()
                break
            self.chunk_left = size
            # after the payload, skip its CRLF: encoded as a negative "left"
            take = min(size, n - pos)
            out.append(buf[pos:pos + take])
            pos += take
            self.chunk_left -= take
            if self.chunk_left == 0:
                self.chunk_left = -2
        self.raw = buf[pos:] if pos < n else b""
        return b"".join(out)

    def _lines(self, data: bytes):
        if not data:
            return
        buf = self.text + data if self.text else data
        lines = buf.split(b"\n")
        self.text = lines.pop()
        now = time.time()
        for line in lines:
            if line.startswith(b"data:"):
                RECEIVED.append((now, line[5:].strip()))

    def connection_lost(self, exc):
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed before headers"))


async def open_sse(base: str):
    host_port = base.split("://", 1)[1]
    host, port = host_port.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    await loop.create_connection(lambda: SseProtocol(host_port, ready), host, int(port))
    return await ready


def close_sse(transport) -> None:
    transport.abort()


# --------------------------------------------------------------------------- helpers


def http_get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # loopback only
        return resp.read()


async def aget(url: str, timeout: float = 10.0) -> bytes:
    return await asyncio.to_thread(http_get, url, timeout)


def procs_of(pids: list[int]) -> list[psutil.Process]:
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out.append(p)
            out.extend(p.children(recursive=True))
        except psutil.Error:
            pass
    return out


def rss_of(pids: list[int]) -> int:
    total = 0
    for p in procs_of(pids):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def cpu_of(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    idx = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[idx]


def redis_commandstats(addr: str) -> dict[str, int]:
    """``INFO commandstats`` of the Redis at ``host:port`` as {command: calls} (blocking, ~1 ms)."""
    import socket

    host, _, port = addr.partition(":")
    with socket.create_connection((host, int(port or 6379)), timeout=5) as sock:
        sock.sendall(b"INFO commandstats\r\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            data += chunk
            head, _, body = data.partition(b"\r\n")
            if chunk == b"" or (head.startswith(b"$") and len(body) >= int(head[1:])):
                break
    stats = {}
    for line in body.decode().splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line[len("cmdstat_"):].partition(":")
            stats[name] = int(dict(f.split("=") for f in fields.split(","))["calls"])
    return stats


def redis_commandstats_of(addrs: list[str]) -> dict[str, int]:
    """Calls per command, summed over the nodes ``addrs`` (one Redis, or every node of a cluster)."""
    total: dict[str, int] = {}
    for addr in addrs:
        for name, calls in redis_commandstats(addr).items():
            total[name] = total.get(name, 0) + calls
    return total


async def server_subscribers(urls: list[str]) -> int | None:
    total = 0
    for url in urls:
        try:
            stats = url + (f"/stats?topics={TOPICS}" if TOPICS else "/stats")
            total += int(json.loads(await aget(stats, 5))["subscribers"])
        except (OSError, ValueError, KeyError):
            return None
    return total


# --------------------------------------------------------------------------- main run


async def run(args) -> dict:
    urls = [u.rstrip("/") for u in args.url]
    opener, closer = (open_ws, close_ws) if args.kind == "ws" else (open_sse, close_sse)
    server_pids = args.server_pid
    me = psutil.Process()
    result: dict = {
        "kind": args.kind, "n": args.n, "m": args.m, "rate": args.rate, "size": args.size,
        "servers": len(urls), "errors": [],
    }

    await asyncio.sleep(0.3)
    rss_before = rss_of(server_pids)

    # ---- connect N subscribers with bounded concurrency
    sem = asyncio.Semaphore(args.connect_concurrency)
    transports: list = []
    failures: list[str] = []

    async def one(i: int):
        async with sem:
            try:
                transports.append(await asyncio.wait_for(opener(urls[i % len(urls)]), 30))
            except (OSError, TimeoutError, picows.WSError) as exc:
                failures.append(repr(exc)[:200])

    t_connect = time.perf_counter()
    try:
        await asyncio.wait_for(
            asyncio.gather(*(one(i) for i in range(args.n))), args.connect_timeout
        )
    except TimeoutError:
        result["errors"].append("connect phase timed out")
    result["connected"] = len(transports)
    result["connect_failures"] = len(failures)
    if failures:
        result["errors"].append(f"{len(failures)} connect failures, e.g. {failures[0]}")

    # ---- wait until the server(s) count every subscriber (GET /stats), bounded
    deadline = time.monotonic() + args.wait_timeout
    wanted = len(transports) * max(1, TOPICS)  # subscriptions: one per socket, or K per TopicSocket
    seen = await server_subscribers(urls)
    while seen is not None and seen < wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        seen = await server_subscribers(urls)
    result["connect_s"] = time.perf_counter() - t_connect
    result["server_subscribers"] = seen
    if seen is not None and seen < wanted:
        result["errors"].append(f"server counts {seen} of {wanted} subscribers")

    await asyncio.sleep(args.settle)
    rss_after = rss_of(server_pids)
    result["server_rss_before"] = rss_before
    result["server_rss_after"] = rss_after
    result["rss_per_conn"] = (rss_after - rss_before) / max(1, len(transports))

    if args.m > 0 and transports:
        expected = wanted * args.m
        sprocs = procs_of(server_pids)
        for p in sprocs:
            p.cpu_percent(None)
        RECEIVED.clear()
        aprocs = procs_of(args.aux_pid)
        cpu_s0, cpu_c0, cpu_a0 = cpu_of(sprocs), cpu_of([me]), cpu_of(aprocs)
        redis0 = redis_commandstats_of(args.redis_stats) if args.redis_stats else None
        t0 = time.time()
        result["publish_t0"] = t0  # wall clock, for a caller timing its own events against it
        publish = f"/publish-topics?channels={TOPICS}&" if TOPICS else "/publish?"
        await aget(f"{urls[0]}{publish}count={args.m}&rate={args.rate}&size={args.size}")
        hard = time.monotonic() + args.timeout
        last_n, last_change = 0, time.monotonic()
        while True:
            await asyncio.sleep(0.02)
            n = len(RECEIVED)
            now = time.monotonic()
            if n >= expected:
                break
            if n != last_n:
                last_n, last_change = n, now
            elif now - last_change > args.idle_timeout:
                result["errors"].append(f"stalled: nothing for {args.idle_timeout}s")
                break
            if now > hard:
                result["errors"].append(f"hard timeout {args.timeout}s")
                break
        cpu_s1, cpu_c1, cpu_a1 = cpu_of(sprocs), cpu_of([me]), cpu_of(aprocs)
        received = RECEIVED[:]
        if redis0 is not None:
            # Commands Redis served from the /publish request to the last message (this INFO
            # call excluded); the servers' own idle traffic, if any, lands here too.
            redis1 = redis_commandstats_of(args.redis_stats)
            delta = {k: v - redis0.get(k, 0) for k, v in redis1.items()}
            delta["info"] = delta.get("info", 0) - len(args.redis_stats)
            delta = {k: v for k, v in sorted(delta.items()) if v > 0}
            result["redis_commands"] = delta
            result["redis_cmds_per_msg"] = sum(delta.values()) / args.m
        t_last = received[-1][0] if received else time.time()
        wall = max(1e-9, t_last - t0)
        lat = []
        bad = 0
        for t_recv, raw in received:
            try:
                message = json.loads(raw)
                lat.append((t_recv - (message["data"] if TOPICS else message)["ts"]) * 1000.0)
            except (ValueError, KeyError, TypeError):
                bad += 1
        lat.sort()
        server_cpu = cpu_s1 - cpu_s0
        client_cpu = cpu_c1 - cpu_c0
        result.update(
            expected=expected,
            received=len(received),
            lost=expected - len(received),
            unparsable=bad,
            wall_s=wall,
            deliveries_per_s=len(received) / wall,
            p50_ms=percentile(lat, 50),
            p95_ms=percentile(lat, 95),
            p99_ms=percentile(lat, 99),
            max_ms=lat[-1] if lat else None,
            mean_ms=statistics.fmean(lat) if lat else None,
            server_cpu_s=server_cpu,
            client_cpu_s=client_cpu,
            server_cpu_util=server_cpu / wall,  # 1.0 == one core busy for the whole run
            client_cpu_util=client_cpu / wall,
            aux_cpu_util=(cpu_a1 - cpu_a0) / wall if aprocs else None,
            aux_cpu_us_per_msg=(cpu_a1 - cpu_a0) * 1e6 / args.m if aprocs else None,  # the broker's CPU per message
            server_cpu_us_per_delivery=(server_cpu * 1e6 / len(received)) if received else None,
        )
        RECEIVED.clear()

    # ---- disconnect everything, bounded
    for t in transports:
        closer(t)
    await asyncio.sleep(0.2)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=["ws", "sse"], required=True)
    parser.add_argument("--url", action="append", required=True,
                        help="server base URL, http://127.0.0.1:PORT (repeat for 2 processes)")
    parser.add_argument("--n", type=int, default=1000, help="subscribers")
    parser.add_argument("--m", type=int, default=200, help="messages (0 = idle/memory only)")
    parser.add_argument("--rate", type=float, default=0.0, help="msg/s, 0 = flat out")
    parser.add_argument("--size", type=int, default=64, help="pad bytes per message")
    parser.add_argument("--server-pid", type=int, action="append", default=[])
    parser.add_argument("--aux-pid", type=int, action="append", default=[],
                        help="other processes whose CPU is reported (e.g. redis-server)")
    parser.add_argument("--redis-stats", metavar="HOST:PORT", action="append", default=[],
                        help="count Redis commands (INFO commandstats) during the publish phase "
                        "(repeat for every node of a cluster: the counts are summed)")
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument("--connect-timeout", type=float, default=120.0)
    parser.add_argument("--wait-timeout", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=180.0, help="hard cap on receive phase")
    parser.add_argument("--idle-timeout", type=float, default=5.0)
    parser.add_argument("--topics", type=int, default=0,
                        help="K > 0: TopicSocket clients on /topics, each subscribed to K channels")
    args = parser.parse_args(argv)
    global TOPICS
    TOPICS = args.topics
    raise_fd_limit()
    if uvloop is not None:
        result = uvloop.run(run(args))
    else:
        result = asyncio.run(run(args))
    result["client_loop"] = "uvloop" if uvloop is not None else "asyncio"
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
