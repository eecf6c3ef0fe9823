"""Running the Node tests of realtime.js (tests/js) from pytest: node, its node_modules, `node --test`,
and the real servers the end-to-end ones talk to."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.isolation import exclusive
from tests.servers import ROOT, Daphne, free_port, require, stop, wait_for_port, which

JS_DIR = ROOT / "tests" / "js"


def node() -> str:
    """The node binary (20 or newer); skips without one, fails under CI=true."""
    binary = shutil.which("node")
    require(binary is not None, "node (Node.js 20+)")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    require(int(version.lstrip("v").split(".")[0]) >= 20, f"Node.js 20+ (found {version})")
    return binary


def npm_ci(directory: Path, marker: Path) -> None:
    """``npm ci`` in ``directory`` from its committed lock file, unless ``marker`` (a file it installs) exists."""
    if marker.exists():
        return
    npm = shutil.which("npm")
    require(npm is not None, f"npm (to install {directory.relative_to(ROOT)}/node_modules)")
    with exclusive(directory):  # npm ci empties node_modules first: never under a run that uses it
        if not marker.exists():
            result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=directory, capture_output=True,
                                    text=True, timeout=300)
            assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"


def node_modules() -> Path:
    """tests/js/node_modules, installed from the committed lock file (`npm ci`) when `ws` is missing."""
    modules = JS_DIR / "node_modules"
    npm_ci(JS_DIR, modules / "ws" / "package.json")
    return modules


def run_node_tests(path: str, env: dict[str, str] | None = None, timeout: float = 600,
                   log: Path | None = None) -> str:
    """``node --test path`` (relative to tests/js); fails the calling test on a non-zero exit."""
    binary = node()
    node_modules()
    result = subprocess.run(
        [binary, "--test", "--test-reporter=spec", path], cwd=JS_DIR, env={**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )
    output = result.stdout + result.stderr
    if log is not None:
        log.write_text(output)
    assert result.returncode == 0, f"node --test {path} exited with {result.returncode}:\n{output[-20000:]}"
    return output


class RedisServer:
    """A redis-server of our own on a free port, for one test module; stopped by its PID."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = which("redis-server")
        require(binary is not None, "redis-server")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, process=self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


class Control:
    """A loopback HTTP server through which the Node tests stop, kill and start the daphne processes.

    ``POST /{stop,kill,start}/{name}`` answers 200 once done (``kill`` is SIGKILL); it serves from a
    thread of the pytest process, which owns the processes and stops them in the end.
    """

    def __init__(self, servers: dict[str, Daphne]) -> None:
        self.servers = servers
        control = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                _, action, name = self.path.split("/", 2)
                server = control.servers.get(name)
                if server is None or action not in ("stop", "kill", "start"):
                    self.send_error(404)
                    return
                if action == "start":
                    server.start()
                else:
                    server.stop(signal.SIGKILL if action == "kill" else signal.SIGTERM)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> Control:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
