"""realtime.js in Node: its unit tests against an in-process fake server (tests/js/unit)."""

from __future__ import annotations

import re

import pytest

from tests.js_runner import run_node_tests

pytestmark = pytest.mark.timeout(300)


def test_node_unit_tests_of_the_js_client_pass(output_dir):
    output = run_node_tests("unit/", log=output_dir / "node-unit.log")
    assert re.search(r"^\S+ fail 0$", output, re.M), output
    assert int(re.search(r"^\S+ pass (\d+)$", output, re.M).group(1)) >= 10, output
