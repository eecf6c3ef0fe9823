from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.isolation import output_dir as run_output_dir
from tests.liveapp.management.commands.seed_test_users import PASSWORD
from tests.servers import Daphne, Uvicorn, UvicornHttptools, prepare_database

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

@pytest.fixture(
    scope="module", params=[Daphne, Uvicorn, UvicornHttptools], ids=["daphne", "uvicorn", "uvicorn-httptools"]
)
def wire(request, tmp_path_factory, output_dir):
    """daphne, uvicorn (h11), then uvicorn with httptools, serving tests/wireapp with limits small
    enough to reach (tests.wire_settings)."""
    env, _ = prepare_database(tmp_path_factory.mktemp("wire"), {"DJANGO_SETTINGS_MODULE": "tests.wire_settings"})
    server = request.param(env, output_dir / f"{request.param.__name__.lower()}-wire.log").start()
    yield server
    server.stop()
