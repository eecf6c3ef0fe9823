"""Open SSE streams hold no database connection each: counted on a real PostgreSQL.

Django gives every ASGI request a worker thread for its sync parts, and Django's database
connections belong to a thread: a stream that kept its request's thread would keep a connection
open for as long as the client stays (1,000 clients: 1,000 connections, far past PostgreSQL's
default ``max_connections`` of 100). The server here runs the project on a database of its own.
"""

import contextlib

import httpx
import pytest

from tests.conftest import Live
from tests.servers import Daphne, postgres_database, prepare_database
from tests.sse_client import text_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory, output_dir):
    with postgres_database() as (admin, name):
        env, users = prepare_database(tmp_path_factory.mktemp("pg"), {"POSTGRES_DB": name})
        server = Daphne(env, output_dir / "daphne-postgres.log").start()
        try:
            yield Live(server, users), admin, name
        finally:
            server.stop()


def connections_to(admin, name: str) -> int:
    return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()[0]


async def test_open_streams_hold_no_database_connection_each(pg_server):
    live, admin, name = pg_server
    # At most 3 streams per user in the test settings: spread over the active users.
    tokens = [live.token(username) for username in sorted(live.users) if username != "inactive"]
    readers = []  # a dropped httpx reader closes its stream: keep them all
    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=30)) as client:
        async with contextlib.AsyncExitStack() as streams:
            for index in range(20):
                # Half authenticate by token: the user is loaded from the database before streaming.
                token = tokens[index // 2 % len(tokens)]
                url = f"{live.url}/api/t/sse/orm" + (f"?token={token}" if index % 2 else "")
                response = await streams.enter_async_context(client.stream("GET", url))
                assert response.status_code == 200
                chunks = response.aiter_text()
                readers.append(chunks)
                text = ""
                while text.count("event: count") < 2:  # it queried the database twice while streaming
                    text += await text_until(chunks, "\n\n")
            held = connections_to(admin, name)
    assert held <= 2, f"{held} database connections with 20 streams open"

