"""A nats-server of a bench row's own (JetStream on, a temporary store, free loopback ports), never 4222.

``ServerSpec(..., broker="nats")`` in bench/run.py: the row's server processes get ``NATS_URL``;
the server's ``/varz`` counters, read before and after a run, give NATS messages per published
message (``in_msgs``: what the publishers sent; ``out_msgs``: what the server delivered to the
processes' subscriptions) and its CPU is reported beside the servers' (as Redis's is).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def binary() -> str | None:
    return shutil.which("nats-server") or next(
        (str(p) for p in (Path("/usr/sbin/nats-server"), Path("/usr/bin/nats-server")) if p.exists()), None)


class NatsBroker:
    """Started by :meth:`start`, stopped (by its PID) and its store removed by :meth:`stop`."""

    def __init__(self) -> None:
        self.port, self.monitor_port = _free_port(), _free_port()
        self.store = Path(tempfile.mkdtemp(prefix="bench-nats-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> NatsBroker:
        found = binary()
        if found is None:
            raise RuntimeError("nats-server is not installed (scripts/ensure-services installs it)")
        self.process = subprocess.Popen(
            [found, "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor_port), "-js",
             "-sd", str(self.store)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.varz()
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"nats-server exited with {self.process.returncode}") from None
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nats-server did not answer in 20 s")

    def varz(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/varz", timeout=5) as answer:
            return json.loads(answer.read())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.store, ignore_errors=True)


def per_message(before: dict, after: dict, messages: int) -> dict:
    """NATS messages in and out of the server per published message, between two ``/varz`` readings."""
    if not messages:
        return {}
    return {"nats_in_per_msg": (after["in_msgs"] - before["in_msgs"]) / messages,
            "nats_out_per_msg": (after["out_msgs"] - before["out_msgs"]) / messages}
