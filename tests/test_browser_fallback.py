"""The demo's chat in a real headless Chromium behind an nginx that refuses every WebSocket upgrade
(the shipped nginx.conf with ``return 403`` in its @websocket block, as a proxy that strips
WebSockets): realtime.js falls back to SSE down and POST up, and two users chat and see each other's
presence as they do over a WebSocket."""

from __future__ import annotations

import importlib.util
import uuid

import pytest

from tests.isolation import redis_db
from tests.servers import require
from tests.stack import Stack
from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS
from tests.test_browser_chat import WS_CONNECT, open_chat

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, output_dir):
    require(importlib.util.find_spec("playwright") is not None, "the playwright package")
    require(CHROMIUM.exists(), f"Chromium at {CHROMIUM}")
    stack = Stack("fallback", db=redis_db(), tmp=tmp_path_factory.mktemp("fallback"), output_dir=output_dir,
                  refuse_upgrades=True)
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def chromium(stack):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
                                             timeout=30000)
        try:
            yield browser
        finally:
            browser.close()


def test_the_chat_works_and_shows_presence_over_the_fallback(stack, chromium, output_dir):
    room = f"lobby-{uuid.uuid4().hex[:8]}"
    console: list[str] = []
    alice_context = chromium.new_context()
    editor_context = chromium.new_context()
    try:
        alice = open_chat(alice_context, stack, "alice", room, console)
        alice.wait_for_selector("#online li[data-name='alice']", timeout=20000)
        editor = open_chat(editor_context, stack, "editor", room, console)

        alice.wait_for_selector("#chat-log li.presence.join[data-name='editor']", timeout=20000)
        alice.wait_for_selector("#online li[data-name='editor']", timeout=20000)
        editor.wait_for_selector("#online li[data-name='alice']", timeout=20000)
        assert alice.text_content("#online-count") == editor.text_content("#online-count") == "2"

        editor.fill("#chat-input", "hello over the fallback")
        editor.click("#chat-send")
        alice.wait_for_selector("#chat-log li.message[data-author='editor']", timeout=20000)
        assert alice.text_content("#chat-log li.message[data-author='editor'] .text") == "hello over the fallback"
        alice.fill("#chat-input", "hi editor")
        alice.press("#chat-input", "Enter")
        editor.wait_for_selector("#chat-log li.message[data-author='alice']", timeout=20000)
        alice.screenshot(path=str(output_dir / "demo-chat-fallback.png"))

        # The editor closes the tab: the stream ends, so does the session, and alice sees them leave.
        editor_context.close()
        alice.wait_for_selector("#chat-log li.presence.leave[data-name='editor']", timeout=30000)
        alice.wait_for_function("() => !document.querySelector(\"#online li[data-name='editor']\")", timeout=10000)
        assert alice.text_content("#online-count") == "1"
        messages = alice.eval_on_selector_all("#chat-log li.message", "items => items.map(i => i.textContent)")
        assert messages == ["editor: hello over the fallback", "alice: hi editor"]

        # It was the fallback: nginx refused the upgrades, no daphne accepted a chat socket, and the
        # chat's traffic went through /api/realtime/ws/fallback.
        access = stack.nginx.access_log()
        assert '"GET /api/realtime/ws ' in access and " 403 " in access
        assert '"GET /api/realtime/ws/fallback ' in access and '"POST /api/realtime/ws/fallback ' in access
        for daphne in (stack.a, stack.b):
            assert not WS_CONNECT.findall(daphne.log_path.read_text(errors="replace"))
    finally:
        (output_dir / "browser-fallback-console.log").write_text("\n".join(console))
        alice_context.close()
        editor_context.close()
