"""The demo's chat in a real headless Chromium behind an nginx that refuses every WebSocket upgrade
(the shipped nginx.conf with ``return 403`` in its @websocket block, as a proxy that strips
WebSockets): realtime.js falls back to SSE down and POST up, and two users chat and see each other's
presence (and the site's online list) as they do over a WebSocket."""

from __future__ import annotations

import importlib.util
import uuid

import pytest

from tests.isolation import redis_db
from tests.servers import require
from tests.stack import Stack
from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS
from tests.test_browser_chat import WS_CONNECT, converse_and_leave, open_chat

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

        converse_and_leave(alice, editor, editor_context, "hello over the fallback",
                           output_dir / "demo-chat-fallback.png")

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
