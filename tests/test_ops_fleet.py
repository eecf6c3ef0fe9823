"""Two daphne processes sharing a redis-server of their own: both on the admin's Realtime page and in realtime_status.

The admin page is driven in headless Chromium (as tests/test_browser.py does); its screenshot is
written to test-output/admin-realtime.png (docs/howto/operations.md shows a copy, docs/admin-realtime.png).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import tempfile
import uuid

import pytest
from websockets.sync.client import connect

from tests.liveapp.management.commands.seed_test_users import PASSWORD
from tests.servers import PYTHON, ROOT, Daphne, prepare_database, require, which
from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS
from tests.test_channel_redis import RedisServer
from tests.waiting import settled

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, output_dir):
    require(which("redis-server") is not None, "redis-server")
    redis_server = RedisServer(tmp_path_factory.mktemp("ops-redis")).start()
    env, _ = prepare_database(tmp_path_factory.mktemp("ops-fleet"), {
        "DJANGO_SETTINGS_MODULE": "tests.ops_settings", "REDIS_URL": redis_server.url,
        "REALTIME_OPS_PREFIX": f"test:{uuid.uuid4().hex[:8]}",
    })
    a = Daphne(env, output_dir / "daphne-ops-a.log").start()
    b = Daphne(env, output_dir / "daphne-ops-b.log").start()
    try:
        yield a, b, env
    finally:
        a.stop()
        b.stop()
        redis_server.stop()


def status(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([PYTHON, str(ROOT / "manage.py"), "realtime_status", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


def open_rooms(a: Daphne, b: Daphne) -> list:
    """Four sockets (threads of their own: Playwright's sync API holds this thread's event loop)."""
    urls = [f"{a.ws_url}/api/ops/room/lobby", f"{a.ws_url}/api/ops/room/lobby", f"{b.ws_url}/api/ops/room/lobby",
            f"{b.ws_url}/api/ops/room/games"]
    sockets = [connect(url).__enter__() for url in urls]
    for ws in sockets:
        ws.send(json.dumps({"hello": True}))  # published to its room: both processes see traffic
    return sockets


def wait_for_processes(env: dict[str, str], open_by_pid: dict[int, int], timeout: float = 20.0) -> dict:
    """realtime_status --json once every process shows the open connections expected (or at the deadline)."""
    return settled(lambda: json.loads(status(env, "--json")),
                   lambda found: {p["process"]["pid"]: p["open"] for p in found["processes"]} == open_by_pid,
                   timeout, 0.5)


def test_realtime_status_shows_both_processes_through_redis(fleet):
    a, b, env = fleet

    sockets = open_rooms(a, b)
    try:
        found = wait_for_processes(env, {a.process.pid: 2, b.process.pid: 2})
        text = status(env)
    finally:
        for ws in sockets:
            ws.close()
    assert found["shared"] is True
    by_pid = {p["process"]["pid"]: p for p in found["processes"]}
    assert set(by_pid) == {a.process.pid, b.process.pid}
    assert by_pid[a.process.pid]["open"] == 2 and by_pid[b.process.pid]["open"] == 2
    assert "2 process(es) publishing to Redis." in text
    assert str(a.process.pid) in text and str(b.process.pid) in text
    [row] = [line for line in text.splitlines() if line.startswith("/api/ops/room/<name>")]
    assert row.split()[1:3] == ["websocket", "4"]  # open across both processes
    assert any(line.startswith("room:lobby ") and line.split()[1] == "3" for line in text.splitlines())


def test_realtime_status_without_redis_says_it_sees_only_itself(fleet):
    _, _, env = fleet
    alone = {key: value for key, value in env.items() if key != "REDIS_URL"}
    assert "this process can only see itself" in status(alone)


def test_the_admin_page_shows_every_process_live_over_sse(fleet, output_dir):
    require(importlib.util.find_spec("playwright") is not None, "the playwright package")
    require(CHROMIUM.exists(), f"Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    a, b, _ = fleet
    sockets = open_rooms(a, b)
    profile = tempfile.mkdtemp(prefix="realtime-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1280, "height": 1100}, timeout=30000,
            )
            try:
                page = context.new_page()
                page.goto(f"{a.url}/admin/login/?next=/admin/")
                page.fill("#id_username", "staff")
                page.fill("#id_password", PASSWORD)
                page.click("input[type=submit]")
                page.wait_for_selector("a[href='/admin/realtime/']", timeout=10000)  # linked from the index
                page.goto(f"{a.url}/admin/realtime/")
                page.wait_for_selector("#feed-state[data-state='live']", timeout=15000)
                page.wait_for_selector("body[data-processes='2']", timeout=20000)
                pids = page.eval_on_selector_all("#processes tbody tr", "rows => rows.map(r => r.cells[1].textContent)")
                assert sorted(pids) == sorted([str(a.process.pid), str(b.process.pid)])
                room_open = ("(n) => [...document.querySelectorAll('#endpoints tbody tr')].some(r =>"
                             " r.cells[0].textContent === '/api/ops/room/<name>' && r.cells[1].textContent === "
                             "'websocket' && r.cells[2].textContent === String(n))")
                page.wait_for_function(room_open, arg=4, timeout=15000)  # open across both processes
                # It updates by itself: a socket that leaves B is gone from the page without a reload.
                sockets.pop().close()
                page.wait_for_function(room_open, arg=3, timeout=15000)
                page.wait_for_selector("#channels tbody tr", timeout=5000)
                page.screenshot(path=str(output_dir / "admin-realtime.png"), full_page=True)
            finally:
                context.close()
    finally:
        for ws in sockets:
            ws.close()
        shutil.rmtree(profile, ignore_errors=True)


def test_a_non_staff_user_cannot_open_the_page_or_its_feed(fleet):
    import httpx

    a, _, _ = fleet
    assert httpx.get(f"{a.url}/admin/realtime/events").status_code == 401
    page = httpx.get(f"{a.url}/admin/realtime/")
    assert page.status_code == 302 and "/admin/login/" in page.headers["location"]
