"""A Redis Cluster of our own (3 masters, 3 replicas) on six free loopback ports, for one test module.

Never the shared Redis at 6379. Started once per module by a fixture, stopped by the PIDs it
started; ``cluster-node-timeout`` is 1000 ms, so a killed master's replica is promoted in seconds.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from tests.servers import free_port, require, stop, wait_for_port, which

NODE_TIMEOUT_MS = 1000


class RedisCluster:
    """Six ``redis-server --cluster-enabled yes`` processes joined by ``redis-cli --cluster create``."""

    def __init__(self, tmp: Path, nodes: int = 6) -> None:
        self.tmp = tmp
        self.ports = []
        while len(self.ports) < nodes:
            port = free_port()
            if port not in self.ports and port + 10000 < 65536:  # the cluster bus is port + 10000
                self.ports.append(port)
        self.processes: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        """``REDIS_URL`` for realtime: the cluster form, naming two nodes to start from."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])

    def start_node(self, port: int) -> None:
        binary = which("redis-server")
        require(binary is not None, "redis-server (7 or newer)")
        directory = self.tmp / str(port)
        directory.mkdir(exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", str(directory / f"nodes-{port}.conf"),
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--save", "", "--appendonly", "no",
             "--dir", str(directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(port, process=self.processes[port])

    def start(self) -> RedisCluster:
        cli = which("redis-cli")
        require(cli is not None, "redis-cli")
        version = subprocess.run([which("redis-server") or "redis-server", "--version"], capture_output=True,
                                 text=True, timeout=10).stdout
        major = int(version.split("v=", 1)[1].split(".", 1)[0]) if "v=" in version else 0
        require(major >= 7, f"redis-server 7 or newer for sharded pub/sub (found {version.strip()!r})")
        for port in self.ports:
            self.start_node(port)
        result = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-replicas", "1",
             "--cluster-yes"], capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, f"redis-cli --cluster create failed:\n{result.stdout}\n{result.stderr}"
        self.wait_ok()
        self.wait_replicas_synced()
        return self

    def wait_replicas_synced(self, timeout: float = 30.0) -> None:
        """Until three nodes are replicas in sync with their master: a replica that never synced refuses to
        take over (its data would be too old), so a master killed before that would not fail over."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            synced = sum("master_link_status:up" in self.cli(p, "info", "replication") for p in self.alive())
            if synced >= len(self.ports) // 2:
                return
            time.sleep(0.1)
        raise TimeoutError(f"the replicas are not in sync after {timeout}s")

    def cli(self, port: int, *args: str) -> str:
        return subprocess.run([which("redis-cli"), "-p", str(port), *args], capture_output=True, text=True,
                              timeout=10).stdout

    def alive(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is None]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and agrees on the masters."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in self.cli(p, "cluster", "info") for p in self.alive()):
                return
            time.sleep(0.1)
        raise TimeoutError(f"the cluster is not ok after {timeout}s")

    def masters(self) -> dict[int, list[tuple[int, int]]]:
        """Live master port → the slot ranges it serves."""
        found: dict[int, list[tuple[int, int]]] = {}
        for line in self.cli(self.alive()[0], "cluster", "nodes").splitlines():
            fields = line.split()
            if "master" in fields[2] and "fail" not in fields[2]:
                port = int(fields[1].split(":")[1].split("@")[0])
                found[port] = [tuple(int(n) for n in r.split("-")) if "-" in r else (int(r), int(r))
                               for r in fields[8:] if not r.startswith("[")]
        return found

    def master_of(self, slot: int) -> int:
        return next(port for port, ranges in self.masters().items() if any(a <= slot <= b for a, b in ranges))

    def wait_replicated(self, port: int, timeout: float = 10.0) -> None:
        """Until master ``port``'s replica has acknowledged everything written to it (its offset is the master's)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = dict(line.split(":", 1) for line in self.cli(port, "info", "replication").split() if ":" in line)
            replica = info.get("slave0", "")
            if f"offset={info.get('master_repl_offset')}," in replica + ",":
                return
            time.sleep(0.05)
        raise TimeoutError(f"the replica of {port} is behind after {timeout}s")

    def kill(self, port: int) -> None:
        """SIGKILL one node (a crash: no goodbye to the cluster)."""
        self.processes[port].send_signal(signal.SIGKILL)
        self.processes[port].wait(10)

    def wait_failover(self, killed: int, timeout: float = 30.0) -> None:
        """Until another master serves every slot the killed one had, and the cluster is ok."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            masters = self.masters()
            if killed not in masters and sum(b - a + 1 for r in masters.values() for a, b in r) == 16384:
                self.wait_ok(max(1.0, deadline - time.monotonic()))
                return
            time.sleep(0.1)
        raise TimeoutError(f"no replica took over from {killed} after {timeout}s:\n"
                           + self.cli(self.alive()[0], "cluster", "nodes"))

    def stop(self) -> None:
        for process in self.processes.values():
            stop(process)
