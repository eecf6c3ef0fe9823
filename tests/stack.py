"""A production-like stack for tests: a Redis database, two daphne processes sharing it, nginx in front.

Every process is started here and stopped by its PID in ``Stack.stop()`` (called from a fixture
finalizer); every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import redis

from tests.servers import BIN, PYTHON, ROOT, Daphne, free_port, redis_available, require, stop, wait_for_port, which

REDIS = "redis://127.0.0.1:6379"
PASSWORDS = {"admin": "admin-pass-123", "editor": "editor-pass-123", "alice": "alice-pass-123"}


def require_stack() -> str:
    """Skip (fail under CI=true) without Redis or nginx; returns nginx's path."""
    require(redis_available(), "Redis on 127.0.0.1:6379")
    nginx = which("nginx")
    require(nginx is not None, "nginx")
    return nginx


def secret_key(state_dir: Path) -> str:
    """The key scripts/secret-key creates (once) and keeps in ``state_dir``, as run-prod uses it."""
    result = subprocess.run([PYTHON, str(ROOT / "scripts" / "secret-key")], env={**os.environ,
                            "REALTIME_STATE_DIR": str(state_dir)}, check=True, capture_output=True, text=True,
                            timeout=30)
    return result.stdout.strip()


class ProdDaphne(Daphne):
    """daphne started by scripts/daphne-prod, with the flags `make run-prod` uses (no ``--proxy-headers``...)."""

    def start(self) -> ProdDaphne:
        log = open(self.log_path, "ab" if self.process is not None else "wb")
        self.process = subprocess.Popen(
            [str(ROOT / "scripts" / "daphne-prod"), "-b", "127.0.0.1", "-p", str(self.port)],
            cwd=ROOT, env={**self.env, "DAPHNE": str(BIN / "daphne")}, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for_port(self.port, process=self.process)
        return self


class Nginx:
    """nginx rendered from the top-level nginx.conf template, in the foreground, on loopback."""

    def __init__(self, binary: str, run_dir: Path, backends: list[int], static_root: Path,
                 header_timeout: str = "10s", refuse_upgrades: bool = False) -> None:
        self.binary = binary
        #: Answer every WebSocket upgrade 403, as a corporate proxy that strips WebSockets does.
        self.refuse_upgrades = refuse_upgrades
        self.run_dir = run_dir
        self.port = free_port()
        self.backends = backends
        self.static_root = static_root
        self.header_timeout = header_timeout
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        args = [PYTHON, str(ROOT / "scripts" / "render-nginx"), "--listen", f"127.0.0.1:{self.port}"]
        for port in self.backends:
            args += ["--backend", f"127.0.0.1:{port}"]
        args += ["--static-root", str(self.static_root), "--run-dir", str(self.run_dir)]
        args += ["--header-timeout", self.header_timeout]
        conf = subprocess.run(args, check=True, capture_output=True, text=True, timeout=30).stdout.strip()
        if self.refuse_upgrades:
            text = Path(conf).read_text()
            block = "location @websocket {"
            assert text.count(block) == 1, "nginx.conf's @websocket block moved: update refuse_upgrades"
            conf = str(self.run_dir / "nginx-no-upgrades.conf")
            secret = "location ^~ /@secret/ {"  # WebSockets with ?token= (listen()) go there
            assert text.count(secret) == 1, "nginx.conf's @secret block moved: update refuse_upgrades"
            text = text.replace(block, block + "\n            return 403;")
            refuse = "\n            if ($http_upgrade) {\n                return 403;\n            }"
            text = text.replace(secret, secret + refuse)
            Path(conf).write_text(text)
        with open(self.run_dir / "stderr.log", "wb") as stderr:
            self.process = subprocess.Popen(
                [self.binary, "-p", str(self.run_dir), "-e", str(self.run_dir / "error.log"), "-c", conf],
                stdout=subprocess.DEVNULL, stderr=stderr,
            )
        wait_for_port(self.port, process=self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)  # SIGTERM: fast shutdown, long-lived streams included

    def access_log(self) -> str:
        path = self.run_dir / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def error_log(self) -> str:
        path = self.run_dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_log(self, needle: str, count: int = 1, timeout: float = 10) -> list[str]:
        """Access-log lines containing ``needle`` (nginx writes a line when a request ends)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.access_log().splitlines() if needle in line]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.1)


class Stack:
    """Redis database ``db`` (flushed), two daphne (``a``, ``b``) with ``REDIS_URL``, nginx in front, and
    the outbox worker that publishes the trades (``manage.py realtime_outbox``), as ``make run-prod`` runs.

    ``settings`` is the Django settings module; ``header_timeout`` nginx's client_header_timeout.
    """

    def __init__(self, name: str, db: int, tmp: Path, output_dir: Path, settings: str = "tests.trading_settings",
                 header_timeout: str = "10s", refuse_upgrades: bool = False) -> None:
        self.name = name
        self.redis_url = f"{REDIS}/{db}"
        self.tmp = tmp
        self.output_dir = output_dir
        self.nginx_binary = require_stack()
        # nginx's workers run as "nobody" when the tests run as root: their files must be reachable.
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"realtime-{name}-"))
        self.run_dir.chmod(0o755)
        self.static_root = self.run_dir / "static"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings,
            "DJANGO_SQLITE_PATH": str(tmp / "db.sqlite3"),
            "DJANGO_STATIC_ROOT": str(self.static_root),
            "REDIS_URL": self.redis_url,
            "CHANNEL_LAYER_PREFIX": f"test-{name}-{os.getpid()}",
            "DJANGO_DEBUG": "0",  # as in production: nginx serves the static files
            # DEBUG off refuses to start without a key: made and kept as `make run-prod` does.
            "DJANGO_SECRET_KEY": secret_key(tmp / "state"),
            "PYTHONUNBUFFERED": "1",
        }
        self.a = ProdDaphne(self.env, output_dir / f"{name}-daphne-a.log")
        self.b = ProdDaphne(self.env, output_dir / f"{name}-daphne-b.log")
        self.nginx = Nginx(self.nginx_binary, self.run_dir, [self.a.port, self.b.port], self.static_root,
                           header_timeout, refuse_upgrades)
        #: Every token handed out, so tests can prove none of them reached a log file.
        self.tokens: list[str] = []
        self.user_ids: dict[str, int] = {}
        self.outbox: subprocess.Popen | None = None

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> Stack:
        redis.Redis.from_url(self.redis_url, socket_timeout=5).flushdb()
        self.manage("migrate", "--noinput", "-v0")
        self.manage("demo_users")
        self.manage("collectstatic", "--noinput", "-v0")
        self.a.start()
        self.b.start()
        with open(self.output_dir / f"{self.name}-outbox.log", "wb") as log:
            self.outbox = subprocess.Popen([PYTHON, str(ROOT / "manage.py"), "realtime_outbox", "--interval", "0.1"],
                                           cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.nginx.start()
        for username in PASSWORDS:
            self.user_ids[username] = self.get("/api/trading/me", username).json()["id"]
        return self

    def stop(self) -> None:
        try:
            self.nginx.stop()
        finally:
            if self.outbox is not None:
                stop(self.outbox)
            self.a.stop()
            self.b.stop()
            for log in ("access.log", "error.log"):
                if (self.run_dir / log).exists():
                    shutil.copy(self.run_dir / log, self.output_dir / f"{self.name}-nginx-{log}")
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [PYTHON, str(ROOT / "manage.py"), *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    # -- clients ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.nginx.url

    def token(self, username: str, base: str | None = None) -> str:
        response = httpx.post(
            f"{base or self.url}/api/auth/token/",
            json={"username": username, "password": PASSWORDS[username]},
            timeout=10,
        )
        response.raise_for_status()
        token = response.json()["access"]
        self.tokens.append(token)
        return token

    def get(self, path: str, username: str, base: str | None = None) -> httpx.Response:
        token = self.token(username, base)
        response = httpx.get(f"{base or self.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        response.raise_for_status()
        return response

    def order(self, username: str, symbol: str = "R_100", side: str = "buy", amount: str = "10",
              base: str | None = None) -> dict:
        """Place a trade through ``base`` (nginx by default) with a Bearer token; returns the trade."""
        token = self.token(username, base)
        response = httpx.post(
            f"{base or self.url}/api/trading/orders",
            json={"symbol": symbol, "side": side, "amount": amount},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return response.json()

    def order_offline(self, username: str, symbol: str = "R_50", side: str = "sell", amount: str = "5") -> dict:
        """Place a trade from a separate process (no web server needed): manage.py place_trade."""
        return json.loads(self.manage("place_trade", username, symbol, side, amount))
