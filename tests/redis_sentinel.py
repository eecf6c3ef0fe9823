"""A Redis Sentinel group of our own (one master, one replica, three sentinels) on free loopback ports.

Never the shared Redis at 6379. Started once per test module by a fixture, stopped by the PIDs it
started. ``down-after-milliseconds`` is 1000 and ``failover-timeout`` 5000, so a killed master's
replica is promoted within a few seconds. The sentinels run as ``redis-server <conf> --sentinel``
(Debian's ``redis-sentinel`` is the same binary); each rewrites its own config file, so each has one
in the group's temporary directory.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from tests.servers import free_port, require, stop, wait_for_port, which

SERVICE = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


class RedisSentinel:
    """``redis-server`` master and replica, and three ``redis-server --sentinel`` watching the master."""

    def __init__(self, tmp: Path, sentinels: int = 3) -> None:
        self.tmp = tmp
        ports: list[int] = []
        while len(ports) < 2 + sentinels:
            port = free_port()
            if port not in ports:
                ports.append(port)
        self.server_ports, self.sentinel_ports = ports[:2], ports[2:]
        self.processes: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        """``REDIS_URL`` for realtime: the Sentinel form, naming every sentinel, database 0."""
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports) + f"/{SERVICE}/0"

    def _server(self, port: int, *extra: str) -> None:
        directory = self.tmp / str(port)
        directory.mkdir(exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(directory), *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(port, process=self.processes[port])

    def _sentinel(self, port: int, master: int) -> None:
        conf = self.tmp / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.tmp}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        command = [which("redis-sentinel"), str(conf)] if which("redis-sentinel") else \
            [which("redis-server"), str(conf), "--sentinel"]
        self.processes[port] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port, process=self.processes[port])

    def start(self) -> RedisSentinel:
        require(which("redis-server") is not None, "redis-server (its --sentinel mode)")
        require(which("redis-cli") is not None, "redis-cli")
        master, replica = self.server_ports
        self._server(master)
        self._server(replica, "--replicaof", "127.0.0.1", str(master))
        for port in self.sentinel_ports:
            self._sentinel(port, master)
        self.wait_ready(master)
        return self

    @property
    def redis_cli(self) -> str:
        return which("redis-cli") or "redis-cli"

    def cli(self, port: int, *args: str) -> str:
        return subprocess.run([self.redis_cli, "-p", str(port), *args], capture_output=True, text=True,
                              timeout=10).stdout

    def sentinel_view(self, port: int) -> dict[str, str]:
        """``SENTINEL MASTER`` of one sentinel, as a dict."""
        lines = self.cli(port, "sentinel", "master", SERVICE).splitlines()
        return dict(zip(lines[::2], lines[1::2], strict=False))

    def master(self) -> int:
        """The port every live sentinel names as the master now."""
        answers = {self.cli(p, "sentinel", "get-master-addr-by-name", SERVICE).split()[-1]
                   for p in self.sentinel_ports if self.processes[p].poll() is None}
        assert len(answers) == 1, f"the sentinels disagree on the master: {answers}"
        return int(answers.pop())

    def replica(self) -> int:
        return next(port for port in self.server_ports if port != self.master())

    def wait_ready(self, master: int, timeout: float = 30.0) -> None:
        """Until every sentinel names ``master``, knows the two other sentinels (a failover needs their votes)
        and a replica, and the replica is in sync (one that never synced refuses to take over)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            views = [self.sentinel_view(p) for p in self.sentinel_ports]
            if all(v.get("port") == str(master) and v.get("num-other-sentinels") == str(len(views) - 1)
                   and v.get("num-slaves") == "1" and "s_down" not in v.get("flags", "") for v in views) \
                    and "master_link_status:up" in self.cli(self.replica_of(master), "info", "replication"):
                return
            time.sleep(0.1)
        raise TimeoutError(f"the sentinel group is not ready after {timeout}s: {views}")

    def replica_of(self, master: int) -> int:
        return next(port for port in self.server_ports if port != master)

    def wait_replicated(self, master: int, timeout: float = 10.0) -> None:
        """Until the replica has acknowledged everything written to ``master`` (its offset is the master's)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = dict(line.split(":", 1) for line in self.cli(master, "info", "replication").split() if ":" in line)
            if f"offset={info.get('master_repl_offset')}," in info.get("slave0", "") + ",":
                return
            time.sleep(0.05)
        raise TimeoutError(f"the replica of {master} is behind after {timeout}s")

    def kill(self, port: int) -> None:
        """SIGKILL one server (a crash: no goodbye to anyone)."""
        self.processes[port].send_signal(signal.SIGKILL)
        self.processes[port].wait(10)

    def wait_failover(self, killed: int, timeout: float = 30.0) -> int:
        """Until every sentinel names another master and that server says it is one; returns its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                master = self.master()
            except AssertionError:  # the sentinels are still telling each other
                master = killed
            if master != killed and "role:master" in self.cli(master, "info", "replication"):
                return master
            time.sleep(0.1)
        raise TimeoutError(f"no replica took over from {killed} after {timeout}s: "
                           f"{[self.sentinel_view(p) for p in self.sentinel_ports]}")

    def restart_as_replica(self, port: int) -> None:
        """Start a killed server again as a replica of the master now, and wait until the group is whole."""
        master = self.master()
        self._server(port, "--replicaof", "127.0.0.1", str(master))
        self.wait_ready(master)

    def switch_over(self, timeout: float = 30.0) -> int:
        """``SENTINEL FAILOVER``: promote the replica while the master lives on, demoted to a replica (the
        sentinels also kill its clients' connections); returns the new master's port."""
        old = self.master()
        assert self.cli(self.sentinel_ports[0], "sentinel", "failover", SERVICE).strip() == "OK"
        new = self.wait_failover(old, timeout)
        deadline = time.monotonic() + timeout
        while "role:slave" not in self.cli(old, "info", "replication"):
            assert time.monotonic() < deadline, f"{old} was not demoted after {timeout}s"
            time.sleep(0.1)
        return new

    def stop(self) -> None:
        for process in self.processes.values():
            stop(process)
