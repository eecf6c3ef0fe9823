"""Running the Node tests of realtime.js (tests/js) from pytest: node, its node_modules, `node --test`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.servers import ROOT, require

JS_DIR = ROOT / "tests" / "js"


def node() -> str:
    """The node binary (20 or newer); skips without one, fails under CI=true."""
    binary = shutil.which("node")
    require(binary is not None, "node (Node.js 20+)")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    require(int(version.lstrip("v").split(".")[0]) >= 20, f"Node.js 20+ (found {version})")
    return binary


def node_modules() -> Path:
    """tests/js/node_modules, installed from the committed lock file (`npm ci`) when `ws` is missing."""
    modules = JS_DIR / "node_modules"
    if not (modules / "ws" / "package.json").exists():
        npm = shutil.which("npm")
        require(npm is not None, "npm (to install tests/js/node_modules)")
        result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
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
