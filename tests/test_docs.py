"""The documentation site: it builds with warnings as errors, and every code block in it is run or parsed.

Which test runs each block is said by the marker before it (tests/docs_blocks.py): the tutorial's
``install`` and ``run`` blocks by tests/test_install.py, the testing how-to's ``example`` blocks by
tests/test_testing_kit.py (and tests/test_install.py), ``exec: asyncapi`` by tests/test_asyncapi.py,
the other ``exec`` blocks here, and ``parsed`` blocks are parsed here by their language.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import shutil
import subprocess
import sys
import types
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import RequestFactory
from django.utils import timezone

import realtime
from tests.docs_blocks import DOCS, KINDS, TUTORIAL, Block, every_block, marked
from tests.servers import ROOT, require, which

#: The ``exec`` blocks and the test that runs each (test_asyncapi.py's, and this module's below).
EXECUTED = {
    "asyncapi": "tests/test_asyncapi.py::test_the_howtos_message_examples_snippet_does_what_it_says",
    "module-tree": "test_the_module_tree_names_modules_that_exist",
    "logging": "test_the_json_logging_configuration_writes_one_object_per_connection",
    "connection-log-line": "test_the_connection_log_line_has_the_fields_the_page_shows",
    "realtime-status": "test_realtime_status_prints_the_tables_the_page_shows",
    "revoke": "test_revoking_users_changed_by_update",
    "announce": "test_a_sync_view_publishes_with_publish_sync",
    "permissions": "test_the_permission_snippet_composes",
    "sse-notifications": "test_the_sse_snippets_define_routable_views",
    "sse-follow": "test_the_sse_snippets_define_routable_views",
    "sse-function": "test_the_sse_snippets_define_routable_views",
    "websocket-stream": "test_the_websocket_snippets_define_routable_views",
    "websocket-relay": "test_the_websocket_snippets_define_routable_views",
    "python-client-worker": "tests/test_client_live.py::test_the_docs_worker_follows_a_room_and_answers",
    "publish-curl": "tests/test_publish_api.py::test_the_docs_curl_example_publishes_as_it_says",
}


def executed(name: str) -> str:
    (block,) = [b for b in marked("exec") if b.argument == name]
    return block.code


def public_names() -> dict:
    """What a snippet that does not import may assume: realtime's public names."""
    return {name: getattr(realtime, name) for name in realtime.__all__}


# -- the build ------------------------------------------------------------------------------------


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=config.parent, capture_output=True, text=True, timeout=300, env={"NO_MKDOCS_2_WARNING": "1", **_env()},
    )


def _env() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}


@pytest.mark.timeout(300)
def test_the_site_builds_with_warnings_as_errors_and_the_api_from_docstrings(tmp_path):
    built = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stdout + built.stderr
    api = (tmp_path / "site" / "reference" / "testing" / "index.html").read_text()
    assert 'id="realtime.testing.capture.capture"' in api and "Record what is published on" in api  # a docstring
    for page, name in [("websocketview", "realtime.websocket.WebSocketView"), ("sse", "realtime.sse.SSEView"),
                       ("channel", "realtime.pubsub.channel.Channel"), ("topics", "realtime.topics.topic.Topic"),
                       ("topics", "realtime.topics.socket.TopicSocket"), ("permissions", "realtime.permissions"),
                       ("routing", "realtime.routing.Router")]:
        assert f'id="{name}"' in (tmp_path / "site" / "reference" / page / "index.html").read_text(), name
    assert (tmp_path / "site" / "protocol" / "index.html").is_file()
    roles = [page for page in (tmp_path / "site").rglob("*.html") if re.search(r":(class|meth|mod|func):<code>",
                                                                              page.read_text())]
    assert roles == []  # scripts/mkdocs_hooks.py drops the docstrings' Sphinx role prefixes


@pytest.mark.timeout(300)
def test_a_broken_link_fails_the_build(tmp_path):
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copytree(ROOT / "realtime", tmp_path / "realtime")  # mkdocstrings reads the sources
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "mkdocs_hooks.py", tmp_path / "scripts")
    page = tmp_path / "docs" / "tutorial" / "auth.md"
    page.write_text(page.read_text() + "\nSee [nowhere](no-such-page.md).\n")
    built = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert built.returncode != 0 and "no-such-page.md" in built.stdout + built.stderr


def test_the_readme_links_only_to_pages_that_exist():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert len(links) > 20
    for link in links:
        assert (ROOT / link).is_file(), link


# -- every block says who runs it -------------------------------------------------------------------


def test_every_code_block_has_a_marker_that_names_how_it_is_tested():
    unmarked = [block.where for block in every_block() if block.kind not in KINDS]
    assert unmarked == [], "a code block without <!-- install|run|example|exec|parsed: ... --> before it"
    install_pages = {*TUTORIAL, "howto/testing.md"}
    for block in every_block():
        if block.kind in ("install", "run"):
            assert block.page in install_pages, f"{block.where}: tests/test_install.py reads only {install_pages}"
        if block.kind == "example":
            assert block.page == "howto/testing.md", block.where
        if block.kind == "parsed":
            assert len(block.argument) > 20, f"{block.where}: say why it is only parsed"
    assert sorted(block.argument for block in marked("exec")) == sorted(EXECUTED)


def parsed_blocks() -> list[Block]:
    return marked("parsed")


@pytest.mark.parametrize("block", parsed_blocks(), ids=lambda block: block.where)
def test_parsed_blocks_parse(block, tmp_path):
    if block.language == "python":
        compile(block.code, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    elif block.language == "sh":
        subprocess.run(["bash", "-n"], input=block.code, text=True, check=True, timeout=30)
    elif block.language in ("js", "html"):
        require(which("node") is not None, "Node.js (node --check parses the JavaScript blocks)")
        code = block.code
        if block.language == "html":
            code = re.fullmatch(r'<script type="module">\n(.*)</script>', code, re.S)[1]
        script = tmp_path / "block.mjs"
        script.write_text(code)
        subprocess.run(["node", "--check", str(script)], check=True, timeout=30)
    elif block.language == "json":
        for line in block.code.splitlines():
            json.loads(line.replace("{...}", "{}"))
    elif block.language == "yaml":
        config = yaml.safe_load(block.code)
        targets = config["scrape_configs"][0]["static_configs"][0]["targets"]
        run_prod = (ROOT / "scripts" / "run-prod").read_text()
        backends = re.search(r'BACKENDS:-"?([\d ]+)', run_prod)[1].split()
        assert "$((port + 1100))" in run_prod  # each daphne's metrics port
        assert targets == [f"127.0.0.1:{int(port) + 1100}" for port in backends]
    else:
        pytest.fail(f"{block.where}: no parser for {block.language!r} blocks")


# -- the exec blocks --------------------------------------------------------------------------------


def test_the_module_tree_names_modules_that_exist():
    tree = executed("module-tree")
    folder, names = Path("realtime"), []
    for line in tree.splitlines()[1:]:
        match = re.match(r"  (\w+)/\s", line)
        if match:
            folder = Path("realtime") / match[1]
            assert (ROOT / folder).is_dir(), folder
            continue
        code = line[:46]  # the tree's left column; what follows is the description
        for name in re.findall(r"\b(\w+\.py)\b", code):
            names.append(folder / name)
    assert len(names) > 40
    missing = [str(name) for name in names if not (ROOT / name).is_file()]
    assert missing == []


def test_the_json_logging_configuration_writes_one_object_per_connection():
    code = executed("logging") + """
import logging.config, sys
logging.config.dictConfig(LOGGING)
logging.getLogger("realtime.connections").info("websocket ended", extra={"realtime": {"code": 1000, "user": 7}})
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                         cwd=ROOT, env=_env())
    record = json.loads(out.stderr.strip())  # a StreamHandler writes to stderr
    assert record["logger"] == "realtime.connections" and record["code"] == 1000 and record["user"] == 7


def _fields(line: str) -> list[str]:
    return [token.split("=", 1)[0] for token in line.split() if "=" in token]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_the_connection_log_line_has_the_fields_the_page_shows():
    from realtime.ops.connections import logger
    from realtime.testing import WebSocketClient

    shown = executed("connection-log-line")
    handler = _Lines()
    assert logger.name == "realtime.connections"
    ws = await WebSocketClient("/api/t/echo/docs").connect()  # loading the project configures logging anew
    level, logger.level = logger.level, logging.INFO
    logger.addHandler(handler)
    try:
        await ws.send({"hello": "docs"})
        assert await ws.receive() == {"echo": {"hello": "docs"}}
        await ws.close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = handler.lines
    assert lines, "no connection line was logged"
    assert lines[-1].split()[:2] == shown.split()[:2] == ["websocket", "ended"]
    assert _fields(lines[-1]) == _fields(shown)


def test_realtime_status_prints_the_tables_the_page_shows(settings):
    settings.REDIS_URL = None
    out = StringIO()
    call_command("realtime_status", stdout=out)
    shown = executed("realtime-status").splitlines()
    printed = [" ".join(line.split()) for line in out.getvalue().splitlines()]
    for heading in ("Processes", "Connections per endpoint"):
        index = shown.index(heading)
        assert heading in printed
        assert " ".join(shown[index + 1].split()) == printed[printed.index(heading) + 1]  # the column headings


@pytest.mark.django_db
def test_revoking_users_changed_by_update():
    User = get_user_model()
    stale = User.objects.create_user("stale")
    User.objects.filter(pk=stale.pk).update(last_login=timezone.now() - timedelta(days=400))
    fresh = User.objects.create_user("fresh", last_login=timezone.now())
    exec(executed("revoke"), {"User": User, "cutoff": timezone.now() - timedelta(days=365)})
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert (stale.is_active, fresh.is_active) == (False, True)


def test_a_sync_view_publishes_with_publish_sync(monkeypatch):
    from realtime.testing import capture

    chat = realtime.Channel("docs-myapp-chat")
    monkeypatch.setitem(sys.modules, "myapp", types.ModuleType("myapp"))
    routing = types.ModuleType("myapp.routing")
    routing.chat = chat
    monkeypatch.setitem(sys.modules, "myapp.routing", routing)
    namespace: dict = {}
    exec(executed("announce"), namespace)
    with capture(chat) as published:
        response = namespace["announce"](RequestFactory().post("/announce", {"text": "closing at six"}))
    assert (response.status_code, json.loads(response.content)) == (200, {"delivered_here": 0})
    published.assert_published({"from": "server", "text": "closing at six"}, count=1)
    assert namespace["announce"](RequestFactory().get("/announce")).status_code == 405


async def test_the_permission_snippet_composes():
    namespace: dict = {}
    exec(executed("permissions"), namespace)
    subscriber = namespace["IsSubscriber"]()
    request = types.SimpleNamespace(user=types.SimpleNamespace(is_subscriber=True))
    assert await subscriber.has_permission(request) is True
    request.user.is_subscriber = False
    assert await subscriber.has_permission(request) is False
    assert subscriber.message == "Subscription required"
    assert len(namespace["Moderation"].permission_classes) == 1  # HasRole("editor") | IsAdmin, one permission
    router = realtime.Router()
    router.register_websocket("/premium", namespace["PremiumStream"])
    router.register_websocket("/moderation", namespace["Moderation"])


def test_the_sse_snippets_define_routable_views():
    router = realtime.Router()
    namespace = {**public_names(), "router": router, "listen_notifications": None}
    for name in ("sse-notifications", "sse-follow", "sse-function"):
        exec(executed(name), namespace)
    router.register_sse("/trades", namespace["TradeEvents"])
    assert namespace["trades"].history == 1000
    paths = {route.path for route in router.routes}
    assert {"/notifications", "/events", "/trades"} <= paths, paths


def test_the_websocket_snippets_define_routable_views():
    router = realtime.Router()
    namespace = {**public_names(), "ticks": realtime.Channel("docs-ticks")}
    exec(executed("websocket-stream"), namespace)
    router.register_websocket("/ticks/{symbol}", namespace["TickStream"])  # refused if stream were not async gen
    exec(executed("websocket-relay"), namespace)
    relay = namespace["TickStream"]
    assert relay.relay is namespace["ticks"]
    router.register_websocket("/relayed/{symbol}", relay)
    view = relay()
    view.params = {"symbol": "R_10"}
    assert view.relay_message({"symbol": "R_10"}) == {"symbol": "R_10"}
    assert view.relay_message({"symbol": "R_50"}) is None
