"""realtime.js in Node behind a proxy that refuses WebSocket upgrades (tests/js/fallback): the
fallback binding against a real daphne, subscribing, publishing, presence, resume and token refresh."""

from __future__ import annotations

import re

import pytest

from tests.js_runner import run_node_tests
from tests.liveapp.management.commands.seed_test_users import PASSWORD

pytestmark = pytest.mark.timeout(300)


def test_node_client_falls_back_to_sse_and_post_when_the_upgrade_is_refused(live, output_dir):
    env = {"RT_SERVER": live.url, "RT_PASSWORD": PASSWORD}
    output = run_node_tests("fallback/", env=env, timeout=240, log=output_dir / "node-fallback.log")
    assert re.search(r"^\S+ fail 0$", output, re.M), output
    assert int(re.search(r"^\S+ pass (\d+)$", output, re.M).group(1)) == 4, output
