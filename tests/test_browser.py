"""The demo page in a real headless Chromium, through nginx, in front of two daphne processes.

It logs in, shows ticks and the user's own trade events, and after every daphne process is
stopped (trades being placed meanwhile from another process) and started again, it reconnects by
itself and shows the events placed meanwhile exactly once.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from realtime.pubsub.ids import parse as parse_history_id
from realtime.sealed_ids import TOKEN_LENGTH
from tests.isolation import redis_db
from tests.servers import require
from tests.stack import PASSWORDS, Stack

pytestmark = pytest.mark.timeout(120)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TRADE_IDS = "() => [...document.querySelectorAll('#trades tbody tr.trade')].map(r => r.dataset.tradeId)"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, output_dir):
    require(importlib.util.find_spec("playwright") is not None, "the playwright package")
    require(CHROMIUM.exists(), f"Chromium at {CHROMIUM}")
    stack = Stack("browser", db=redis_db(), tmp=tmp_path_factory.mktemp("browser"), output_dir=output_dir)
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def browser(stack, output_dir):
    """A fresh Chromium profile (--user-data-dir) driven by Playwright; closed by the finalizer."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="realtime-chromium-")
    console = open(output_dir / "browser-console.log", "w")  # closed in the finalizer
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 860},
            timeout=30000,
        )
        context.on("console", lambda message: console.write(f"{message.type}: {message.text}\n"))
        try:
            yield context
        finally:
            context.close()
            console.close()
            shutil.rmtree(profile, ignore_errors=True)


def log_in(page, stack: Stack, username: str) -> None:
    page.goto(f"{stack.url}/", wait_until="load")
    page.fill("#username", username)
    page.fill("#password", PASSWORDS[username])
    page.click("#login-button")
    page.wait_for_selector("#app:not([hidden])", timeout=10000)
    assert page.text_content("#whoami") == username


def wait_live(page, which: str, timeout: float = 15000) -> None:
    page.wait_for_selector(f"#{which}-status[data-state='live']", timeout=timeout)


def trade_ids(page) -> list[str]:
    return page.evaluate(TRADE_IDS)


def wait_for_trades(page, wanted: list[str], timeout: float = 30000) -> None:
    page.wait_for_function(
        f"(wanted) => {{ const ids = ({TRADE_IDS})(); return wanted.every(id => ids.includes(id)); }}",
        arg=wanted,
        timeout=timeout,
    )


def test_admin_link_only_for_staff(stack, browser):
    page = browser.new_page()
    try:
        log_in(page, stack, "admin")
        assert page.is_visible("#admin-link")
        tokens = page.evaluate("() => JSON.parse(sessionStorage.getItem('realtime.tokens'))")
        with page.expect_response("**/api/auth/logout/") as logout:
            page.click("#logout")
        assert logout.value.status == 200 and logout.value.json()["refresh_blacklisted"] is True
        page.wait_for_selector("#login:not([hidden])")
        assert page.evaluate("() => sessionStorage.getItem('realtime.tokens')") is None
        # The button told the server: the refresh token the tab held no longer refreshes.
        refused = httpx.post(f"{stack.url}/api/auth/token/refresh/", json={"refresh": tokens["refresh"]}, timeout=10)
        assert refused.status_code == 401
        log_in(page, stack, "alice")
        assert not page.is_visible("#admin-link")
    finally:
        page.close()


def test_page_shows_ticks_and_own_trades_and_resumes_after_a_daphne_restart(stack, browser, output_dir):
    page = browser.new_page()
    try:
        log_in(page, stack, "alice")
        wait_live(page, "ticks")
        wait_live(page, "trades")
        page.wait_for_function("() => document.querySelectorAll('#ticks tbody tr.tick').length >= 3", timeout=10000)
        assert page.text_content("#last-price") not in ("", "–")

        # A trade from the page's form, one through the API, and one of another user (never shown).
        page.select_option("#order-symbol", "R_10")
        page.fill("#order-amount", "12.5")
        page.click("#order-button")
        page.wait_for_function("() => document.querySelector('#order-result').textContent.startsWith('accepted')")
        page.wait_for_function("() => document.querySelectorAll('#trades tbody tr.trade').length === 1")
        via_api = stack.order("alice", "R_100", "sell", "3")
        stack.order("editor", "R_100", "buy", "77")
        wait_for_trades(page, [via_api["trade_id"]], timeout=10000)
        before = trade_ids(page)
        assert len(before) == 2

        # Every daphne process goes away; trades are placed meanwhile from another process.
        last_tick = page.text_content("#ticks tbody tr.tick")
        stack.a.stop()
        stack.b.stop()
        page.wait_for_selector("#trades-status[data-state='reconnecting']", timeout=10000)
        page.wait_for_selector("#ticks-status:not([data-state='live'])", timeout=10000)
        meanwhile = [stack.order_offline("alice", "R_50", "sell", "5")["trade_id"],
                     stack.order_offline("alice", "R_100", "buy", "6")["trade_id"]]
        stack.order_offline("editor", "R_50", "buy", "1")
        time.sleep(1)  # time under test: nothing arrives within it
        assert trade_ids(page) == before  # nothing arrives while the servers are down
        stack.a.start()
        stack.b.start()

        # The page reconnects by itself, resumes after the last event it saw, and shows each once.
        wait_for_trades(page, meanwhile, timeout=30000)
        wait_live(page, "trades")
        wait_live(page, "ticks", timeout=30000)
        page.wait_for_function(
            "(old) => { const row = document.querySelector('#ticks tbody tr.tick');"
            " return row && row.textContent !== old; }",
            arg=last_tick,
            timeout=10000,
        )
        after_restart = stack.order("alice", "R_10", "buy", "7")["trade_id"]
        wait_for_trades(page, [after_restart], timeout=10000)
        time.sleep(1)  # time under test: room for a duplicate to show up, if there were one
        shown = trade_ids(page)
        assert sorted(shown) == sorted([*before, *meanwhile, after_restart])
        assert len(shown) == len(set(shown)) == 5
        event_ids = page.evaluate(
            "() => [...document.querySelectorAll('#trades tbody tr.trade')].map(r => r.dataset.eventId)"
        )
        # The trade stream is filtered per user, so its ids are sealed: opaque, one per trade, and no
        # history id shows through (docs/explanation/security.md, "Event ids on filtered streams").
        assert len(set(event_ids)) == 5
        assert all(len(i) == TOKEN_LENGTH for i in event_ids)
        assert not any(parse_history_id(i) for i in event_ids)
        assert page.text_content("#trade-count") == "5"
        # The client drops a repeated event id, but counts it: the server sent none.
        assert page.get_attribute("#trades-status", "data-duplicates") == "0"
        page.wait_for_function("() => document.querySelectorAll('#ticks tbody tr.tick').length >= 6", timeout=10000)
        page.screenshot(path=str(output_dir / "demo.png"))
        stored = json.loads(page.evaluate("() => sessionStorage.getItem('realtime.tokens')"))
        stack.tokens.append(stored["access"])
    finally:
        page.close()

    # Tokens traveled in ?token= the whole time; nginx recorded none of them.
    logs = stack.nginx.access_log() + stack.nginx.error_log()
    assert "/api/trading/events/" in logs
    assert "token=" not in logs
    for token in stack.tokens:
        assert token not in logs
