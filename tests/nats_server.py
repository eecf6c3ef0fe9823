"""A nats-server of our own (JetStream on, its own store directory) on free loopback ports, for one test module.

Never the machine's server on 4222. Started once per module by a fixture, stopped by the PID it
started; :meth:`NatsServer.kill` and :meth:`NatsServer.start` again restart it on the same port and
store (a crash and a restart: the streams on disk survive it, the core subscriptions do not).
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from pathlib import Path

from tests.servers import free_port, require, stop, wait_for_port, which


class NatsServer:
    """``nats-server -js -sd <store>`` on 127.0.0.1, with its monitoring endpoint (``/varz``) on another port."""

    def __init__(self, tmp: Path) -> None:
        self.store = tmp / "jetstream"
        self.store.mkdir(parents=True, exist_ok=True)
        self.log_path = tmp / "nats-server.log"
        self.port = free_port()
        self.monitor_port = free_port()
        while self.monitor_port == self.port:
            self.monitor_port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """``NATS_URL`` for realtime."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        binary = which("nats-server")
        require(binary is not None, "nats-server (the Debian package nats-server)")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [binary, "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor_port), "-js",
                 "-sd", str(self.store)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, process=self.process)
        wait_for_port(self.monitor_port, process=self.process)
        return self

    def kill(self) -> None:
        """SIGKILL the server (a crash: no goodbye to the clients)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def varz(self) -> dict:
        """The server's counters (``in_msgs``, ``out_msgs``, ``cpu``...) from its monitoring endpoint."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/varz", timeout=5) as answer:
            return json.loads(answer.read())

    def subsz(self) -> dict:
        """The server's subscriptions, with their subjects (``/subsz?subs=1``)."""
        url = f"http://127.0.0.1:{self.monitor_port}/subsz?subs=1&limit=100000"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.loads(answer.read())

    def subscribers(self, subject: str) -> int:
        """How many subscriptions the server holds on exactly ``subject``."""
        return sum(1 for sub in self.subsz().get("subscriptions_list") or () if sub["subject"] == subject)

    def connz(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/connz", timeout=5) as answer:
            return json.loads(answer.read())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
