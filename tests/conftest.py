from __future__ import annotations

import asyncio
import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.isolation import output_dir as run_output_dir
from tests.liveapp.management.commands.seed_test_users import PASSWORD
from tests.servers import Daphne, Uvicorn, UvicornHttptools, prepare_database
from tests.wire import report

# The fixtures of realtime.testing; an installed distribution loads them by its pytest11 entry point.
pytest_plugins = ["realtime.testing.pytest_plugin"]


@dataclass
class Live:
    server: Daphne
    users: dict[str, int]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ws(self) -> str:
        return self.server.ws_url

    def token(self, username: str) -> str:
        """An access token from the live server's own /api/auth/token/ endpoint."""
        response = httpx.post(f"{self.url}/api/auth/token/", json={"username": username, "password": PASSWORD})
        response.raise_for_status()
        return response.json()["access"]

    def tokens(self, username: str) -> dict[str, str]:
        response = httpx.post(f"{self.url}/api/auth/token/", json={"username": username, "password": PASSWORD})
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="session")
def output_dir() -> Path:
    return run_output_dir(Path(__file__).resolve().parent.parent / "test-output")


@pytest.fixture(scope="session")
def live(tmp_path_factory, output_dir) -> Live:
    """One daphne process serving the project plus tests/liveapp, shared by the live tests."""
    tmp = tmp_path_factory.mktemp("live")
    env, users = prepare_database(tmp)
    server = Daphne(env, output_dir / "daphne-live.log").start()
    yield Live(server, users)
    server.stop()

@dataclass(frozen=True)
class WireMode:
    """A server of the ``wire`` fixture, with ``REALTIME["DIRECT_WRITES"]`` on or off."""

    server: type[Daphne]
    direct: bool = True


WIRE_MODES = [
    pytest.param(WireMode(Daphne), id="daphne"),
    pytest.param(WireMode(Uvicorn), id="uvicorn"),
    pytest.param(WireMode(UvicornHttptools), id="uvicorn-httptools"),
    # The pure ASGI path: every relay, SSE relay and TopicSocket frame through the server's send. Only
    # tests marked also_without_direct_writes run here (the others do not touch direct writes).
    pytest.param(WireMode(Daphne, direct=False), id="daphne-asgi"),
    pytest.param(WireMode(UvicornHttptools, direct=False), id="uvicorn-httptools-asgi"),
]


@pytest.fixture(scope="session")
def wire_database(tmp_path_factory) -> dict[str, str]:
    """The wire servers' environment, with a migrated SQLite file that each server gets a copy of.

    Migrating takes most of a server's start-up, and the wire fixture starts fifteen servers.
    """
    env, _ = prepare_database(tmp_path_factory.mktemp("wire-db"), {"DJANGO_SETTINGS_MODULE": "tests.wire_settings"})
    return env


@pytest.fixture(scope="module", params=WIRE_MODES)
def wire(request, tmp_path_factory, output_dir, wire_database):
    """daphne, uvicorn (h11), uvicorn with httptools, then daphne and uvicorn-httptools with direct writes
    off, serving tests/wireapp with limits small enough to reach (tests.wire_settings)."""
    mode: WireMode = request.param
    database = tmp_path_factory.mktemp("wire") / "db.sqlite3"
    shutil.copyfile(wire_database["DJANGO_SQLITE_PATH"], database)
    env = {**wire_database, "DJANGO_SQLITE_PATH": str(database), "REALTIME_DIRECT_WRITES": "1" if mode.direct else "0"}
    name = mode.server.__name__.lower() + ("" if mode.direct else "-asgi")
    server = mode.server(env, output_dir / f"{name}-wire.log").start()
    server.direct_writes = mode.direct
    try:
        assert asyncio.run(report(server))["direct_writes"] is mode.direct, "the server did not take DIRECT_WRITES"
        yield server
    finally:
        server.stop()


def pytest_collection_modifyitems(config, items):
    """Keep only the tests marked also_without_direct_writes on the ``wire`` servers without direct writes."""
    keep, drop = [], []
    for item in items:
        mode = item.callspec.params.get("wire") if hasattr(item, "callspec") else None
        off = isinstance(mode, WireMode) and not mode.direct
        (drop if off and item.get_closest_marker("also_without_direct_writes") is None else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _children(pid: int) -> list[int]:
    """The running PIDs whose parent is ``pid`` (from /proc; empty where there is none)."""
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":  # a zombie has ended already
                found.append(int(entry.name))
    return found


def pytest_sessionfinish(session, exitstatus):
    """A safety net: no server this test process started outlives the run, even one whose fixture
    failed half-way through its set-up. The xdist controller's children are its workers: left alone."""
    import os
    import signal
    import sys

    config = session.config
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return
    left = _children(os.getpid())
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if left:
        print(f"\ntests/conftest.py: killed {len(left)} process(es) a test left running: {left}", file=sys.stderr)
