"""Real server processes for integration tests: daphne (and later nginx), on free loopback ports.

Every process is started by the test that needs it and stopped by its PID when that test ends.
Under CI=true a missing dependency fails the run instead of skipping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent


def require(condition: bool, what: str) -> None:
    """Skip when ``what`` is missing, but fail under CI=true, where nothing may skip."""
    if condition:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is required under CI=true")
    pytest.skip(f"{what} is not available")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: Seconds a server may take to listen: generous, since a loaded machine (another test run beside
#: this one) can take tens of seconds to import Django; a quiet one takes one or two.
START_TIMEOUT = 60.0


def wait_for_port(port: int, timeout: float = 20.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def redis_available(host: str = "127.0.0.1", port: int = 6379) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class Daphne:
    """A daphne process serving project.asgi with the test settings."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(self.port), "project.asgi:application"]

    def start(self) -> Daphne:
        # A fresh log per server object; a restart of the same object appends to it.
        log = open(self.log_path, "ab" if self.process is not None else "wb")
        self.process = subprocess.Popen(
            self.command(), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            wait_for_port(self.port, timeout=START_TIMEOUT, process=self.process)
        except BaseException:  # never listening (or the wait was interrupted): it must not outlive the test
            stop(self.process)
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            stop(self.process, sig)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Uvicorn(Daphne):
    """The same project on uvicorn, with the protocols it picks by default without extras (h11, websockets-sansio)."""

    def command(self) -> list[str]:
        return [PYTHON, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
                "--ws", "websockets-sansio", "--http", "h11", "project.asgi:application"]


class UvicornHttptools(Uvicorn):
    """uvicorn with ``httptools``, its HTTP protocol when installed (``uvicorn[standard]``).

    SSE relays write their frames directly there (``realtime.servers.uvicorn.ChunkWriter``)."""

    def command(self) -> list[str]:
        return [PYTHON, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
                "--ws", "websockets-sansio", "--http", "httptools", "project.asgi:application"]


#: Migrated and seeded SQLite files by settings module, made once per test process and copied for
#: each server (migrating and seeding is most of a live module's set-up). INSTALLED_APPS depends on
#: the settings module alone, never on the environment, so one file serves every env of a module.
_database_templates: dict[str, tuple[Path, dict[str, int]]] = {}


def _migrate_and_seed(env: dict[str, str]) -> dict[str, int]:
    manage = [PYTHON, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    out = subprocess.run([*manage, "seed_test_users"], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    ids = dict(line.split("=") for line in out.stdout.split())
    return {name: int(pk) for name, pk in ids.items()}


def prepare_database(tmp: Path, extra_env: dict[str, str] | None = None) -> tuple[dict[str, str], dict[str, int]]:
    """A migrated SQLite file with the test users; returns the server env and user ids by name.

    SQLite files are copies of one template per settings module; a PostgreSQL database
    (``POSTGRES_DB`` in ``extra_env``) is migrated and seeded itself.
    """
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DJANGO_SQLITE_PATH": str(tmp / "db.sqlite3"),
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    if "REDIS_URL" not in (extra_env or {}):
        env.pop("REDIS_URL", None)
    if env.get("POSTGRES_DB"):
        return env, _migrate_and_seed(env)
    module = env["DJANGO_SETTINGS_MODULE"]
    if module not in _database_templates:
        import atexit
        import tempfile

        directory = tempfile.mkdtemp(prefix="realtime-db-template-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        template = Path(directory) / "db.sqlite3"
        # Without REDIS_URL: seeding is database work only, and no server is there to hear of it yet.
        seed_env = {key: value for key, value in env.items() if key != "REDIS_URL"}
        users = _migrate_and_seed({**seed_env, "DJANGO_SQLITE_PATH": str(template)})
        _database_templates[module] = (template, users)
    template, users = _database_templates[module]
    shutil.copyfile(template, env["DJANGO_SQLITE_PATH"])
    return env, dict(users)


POSTGRES_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


def postgres_admin():
    """An autocommit connection to the PostgreSQL at 127.0.0.1:5432's ``postgres`` database, or None."""
    import psycopg

    try:
        return psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True)
    except psycopg.OperationalError:
        return None


@contextlib.contextmanager
def postgres_database(prefix: str = "realtime_test") -> Iterator[tuple[Any, str]]:
    """A new, empty PostgreSQL database (its admin connection and name), dropped afterwards; requires the server."""
    admin = postgres_admin()
    require(admin is not None, "PostgreSQL on 127.0.0.1:5432")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin, name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )


#: A client address on this machine that is not one of REALTIME["TRUSTED_PROXIES"]'s defaults (127.0.0.1, ::1).
UNTRUSTED_LOOPBACK = "127.0.0.2"


def require_untrusted_loopback() -> str:
    """127.0.0.2 as a client's source address (Linux routes all of 127/8 to lo; macOS needs an alias)."""
    try:
        with socket.socket() as sock:
            sock.bind((UNTRUSTED_LOOPBACK, 0))
    except OSError:
        require(False, f"{UNTRUSTED_LOOPBACK} as a source address")
    return UNTRUSTED_LOOPBACK
