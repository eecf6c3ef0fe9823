"""realtime.js in Node: unit tests against an in-process fake server (tests/js/unit), and end-to-end
tests (tests/js/e2e) against two real daphne processes on a real redis-server started here."""

from __future__ import annotations

import json
import re

import pytest

from tests.js_runner import Control, RedisServer, run_node_tests
from tests.liveapp.management.commands.seed_test_users import PASSWORD
from tests.servers import Daphne, prepare_database
from tests.stack import secret_key

pytestmark = pytest.mark.timeout(700)

#: REALTIME["PRESENCE_TIMEOUT"] of the servers: small, so a killed process's members go quickly.
PRESENCE_TIMEOUT = 3


def test_node_unit_tests_of_the_js_client_pass(output_dir):
    output = run_node_tests("unit/", log=output_dir / "node-unit.log")
    assert re.search(r"^\S+ fail 0$", output, re.M), output
    assert int(re.search(r"^\S+ pass (\d+)$", output, re.M).group(1)) >= 10, output


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, output_dir):
    """A redis-server of its own, two daphne processes on it, one with history in memory, and the control
    server the Node tests use."""
    tmp = tmp_path_factory.mktemp("js-cluster")
    redis_server = RedisServer(tmp).start()
    servers: dict[str, Daphne] = {}
    control = None
    try:
        env, users = prepare_database(tmp, {
            "REDIS_URL": redis_server.url,
            "DJANGO_SETTINGS_MODULE": "tests.topics_settings",
            "TEST_PRESENCE_TIMEOUT": str(PRESENCE_TIMEOUT),
            "DJANGO_SECRET_KEY": secret_key(tmp / "state"),
        })
        for name in ("a", "b"):
            servers[name] = Daphne(env, output_dir / f"js-daphne-{name}.log").start()
        # A process of its own with history in memory (no REDIS_URL), for the restart that starts it over.
        memory_env = {key: value for key, value in env.items() if key != "REDIS_URL"}
        servers["memory"] = Daphne(memory_env, output_dir / "js-daphne-memory.log").start()
        control = Control(servers).start()
        yield servers, control, users
    finally:
        if control is not None:
            control.stop()
        for server in servers.values():
            server.stop()
        redis_server.stop()


def test_node_end_to_end_tests_against_two_daphne_and_redis(cluster, output_dir):
    servers, control, users = cluster
    env = {
        "RT_SERVERS": json.dumps({name: server.url for name, server in servers.items()}),
        "RT_CONTROL": control.url,
        "RT_USERS": json.dumps(users),
        "RT_PASSWORD": PASSWORD,
        "RT_PRESENCE_TIMEOUT": str(PRESENCE_TIMEOUT),
    }
    output = run_node_tests("e2e/", env=env, timeout=600, log=output_dir / "node-e2e.log")
    assert re.search(r"^\S+ fail 0$", output, re.M), output
    assert int(re.search(r"^\S+ pass (\d+)$", output, re.M).group(1)) >= 5, output
