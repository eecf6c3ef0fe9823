"""The demo's chat in a real headless Chromium: two browser contexts (two users, two sessions) in one
room, each on a different daphne process behind nginx, see each other join (in the room, and in the
site's online list kept from lifecycle events), chat and leave.

realtime.js runs here as shipped (collected static files served by nginx), over /api/realtime/ws.
"""

from __future__ import annotations

import importlib.util
import re
import uuid
from pathlib import Path

import pytest

from tests.isolation import redis_db
from tests.servers import require
from tests.stack import Stack
from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS, log_in

pytestmark = pytest.mark.timeout(180)

WS_CONNECT = re.compile(r'"WSCONNECT /api/realtime/ws"')


@pytest.fixture(scope="module")
def stack(tmp_path_factory, output_dir):
    require(importlib.util.find_spec("playwright") is not None, "the playwright package")
    require(CHROMIUM.exists(), f"Chromium at {CHROMIUM}")
    stack = Stack("chat", db=redis_db(), tmp=tmp_path_factory.mktemp("chat"), output_dir=output_dir)
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def chromium(stack, output_dir):
    """A headless Chromium; each test opens its own contexts (separate cookies and sessionStorage)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
                                             timeout=30000)
        try:
            yield browser
        finally:
            browser.close()


def connects(log: Path) -> int:
    """How many multi-channel sockets a daphne process accepted (its access log)."""
    return len(WS_CONNECT.findall(log.read_text(errors="replace"))) if log.exists() else 0


def open_chat(context, stack: Stack, username: str, room: str, console: list[str]):
    page = context.new_page()
    page.on("console", lambda message: console.append(f"{username} {message.type}: {message.text}"))
    log_in(page, stack, username)
    enter_room(page, room)
    return page


def enter_room(page, room: str) -> None:
    page.fill("#room-name", room)
    page.click("#room-button")
    page.wait_for_selector("#chat-status[data-state='live']", timeout=20000)
    page.wait_for_function("(room) => document.querySelector('#chat-room').textContent === room", arg=room)


def backend_of(page, stack: Stack, before: tuple[int, int], room: str) -> str:
    """Which daphne ("a" or "b") accepted the page's chat socket, from their access logs."""
    page.wait_for_function("() => document.querySelector('#online').children.length > 0", timeout=20000)
    after = (connects(stack.a.log_path), connects(stack.b.log_path))
    grew = [name for name, old, new in zip("ab", before, after, strict=True) if new > old]
    assert len(grew) == 1, f"chat sockets before {before}, after {after}"
    return grew[0]


def converse_and_leave(alice, editor, editor_context, text: str, screenshot: Path) -> None:
    """The steps every chat test shares, once both pages are in one room: each sees the other join,
    in the room and in the site's online list; they chat; the editor closes the tab and alice sees
    them leave the room."""
    alice.wait_for_selector("#chat-log li.presence.join[data-name='editor']", timeout=20000)
    alice.wait_for_selector("#online li[data-name='editor']", timeout=20000)
    editor.wait_for_selector("#online li[data-name='alice']", timeout=20000)
    assert alice.text_content("#online-count") == editor.text_content("#online-count") == "2"
    # Online on the site (the `online` channel, from lifecycle events): the snapshot or the change after it.
    for page in (alice, editor):
        for name in ("alice", "editor"):
            page.wait_for_selector(f"#site-online li[data-name='{name}']", timeout=20000)
    assert alice.text_content("#site-online-count") == editor.text_content("#site-online-count") == "2"

    editor.fill("#chat-input", text)
    editor.click("#chat-send")
    alice.wait_for_selector("#chat-log li.message[data-author='editor']", timeout=20000)
    assert alice.text_content("#chat-log li.message[data-author='editor'] .text") == text
    alice.fill("#chat-input", "hi editor")
    alice.press("#chat-input", "Enter")
    editor.wait_for_selector("#chat-log li.message[data-author='alice']", timeout=20000)
    assert editor.text_content("#chat-log li.message[data-author='alice'] .text") == "hi editor"
    assert editor.input_value("#chat-input") == ""
    alice.screenshot(path=str(screenshot))

    # The editor closes the tab: alice sees them leave (a reload before may have shown a leave already).
    leaves = "() => document.querySelectorAll(\"#chat-log li.presence.leave[data-name='editor']\").length"
    left_before = alice.evaluate(leaves)
    editor_context.close()
    alice.wait_for_function(f"(before) => ({leaves})() > before", arg=left_before, timeout=30000)
    alice.wait_for_function("() => !document.querySelector(\"#online li[data-name='editor']\")", timeout=10000)
    assert alice.text_content("#online-count") == "1"
    messages = alice.eval_on_selector_all("#chat-log li.message", "items => items.map(i => i.textContent)")
    assert messages == [f"editor: {text}", "alice: hi editor"]


def test_two_browsers_in_one_room_see_each_other_join_chat_and_leave(stack, chromium, output_dir):
    room = f"lobby-{uuid.uuid4().hex[:8]}"
    console: list[str] = []
    alice_context = chromium.new_context()
    editor_context = chromium.new_context()
    try:
        before = (connects(stack.a.log_path), connects(stack.b.log_path))
        alice = open_chat(alice_context, stack, "alice", room, console)
        alice_on = backend_of(alice, stack, before, room)
        alice.wait_for_selector("#online li[data-name='alice']", timeout=20000)

        # nginx balances round robin: reload the editor's page until its socket is on the other process.
        before = (connects(stack.a.log_path), connects(stack.b.log_path))
        editor = open_chat(editor_context, stack, "editor", room, console)
        for _ in range(8):
            if backend_of(editor, stack, before, room) != alice_on:
                break
            before = (connects(stack.a.log_path), connects(stack.b.log_path))
            editor.reload(wait_until="load")
            editor.wait_for_selector("#app:not([hidden])", timeout=10000)
            enter_room(editor, room)
        else:
            pytest.fail("the editor's chat socket never reached the other daphne process")

        converse_and_leave(alice, editor, editor_context, "hello from the editor", output_dir / "demo-chat.png")
    finally:
        (output_dir / "browser-chat-console.log").write_text("\n".join(console))
        alice_context.close()
        editor_context.close()
