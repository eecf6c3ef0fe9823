"""The README's "Installing in your project", followed verbatim in a fresh virtualenv and a new project.

The test builds the wheel from a copy of the app's sources, installs it with its declared
dependencies from the package index pip is configured with, runs ``django-admin startproject``,
writes every snippet of the README section where its marker (``<!-- install: ... -->``) says, and
talks to daphne (and ``runserver``) with real WebSocket and SSE clients.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets
from httpx_sse import aconnect_sse
from websockets.exceptions import ConnectionClosed

import realtime
from tests.servers import ROOT, free_port, stop, wait_for_port

SECTION = "## Installing in your project"
MARKER = re.compile(r"<!-- install: (\w+)(?: (\S+))? -->\n```(\w+)\n(.*?)\n```", re.S)
CLONE = "path/to/realtime"  # how the README names the clone; the test puts its copy there
DIST = "django-realtime-endpoints"
USER, PASSWORD = "ada", "install-test-pw-42"


@dataclass
class Snippet:
    action: str  # "shell", "append" or "write"
    target: str | None
    language: str
    code: str


def install_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(SECTION)
    end = readme.index("\n## ", start + len(SECTION))
    return readme[start:end]


def snippets() -> list[Snippet]:
    return [Snippet(action, target or None, language, code)
            for action, target, language, code in MARKER.findall(install_section())]


def test_readme_install_section_marks_every_step_and_avoids_the_demos_routes():
    steps = snippets()
    assert [(s.action, s.target) for s in steps] == [
        ("shell", None),
        ("append", "mysite/settings.py"),
        ("write", "myapp/routing.py"),
        ("write", "mysite/routing.py"),
        ("write", "mysite/asgi.py"),
        ("write", "mysite/urls.py"),
    ]
    for step in steps[1:]:
        compile(step.code, step.target, "exec")
    assert CLONE in steps[0].code
    assert f"django_realtime_endpoints-{realtime.__version__}-py3-none-any.whl" in steps[0].code
    routing = steps[2].code
    assert 'Router(prefix="/myapp"' in routing
    for prefix in ("/chat", "/events", "/trading"):  # the demo's routers, served under /api too
        assert f'Router(prefix="{prefix}"' not in routing


# -- the fresh virtualenv and project -------------------------------------------------------------


def run(command: list[str] | str, cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    script = isinstance(command, str)  # a README shell block, run by bash as a user's shell would
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                            shell=script, executable="/bin/bash" if script else None)
    assert result.returncode == 0, f"{command!r} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


def clean_env(venv: Path) -> dict[str, str]:
    """The environment a user's shell would have in the new venv: none of this repository's settings."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DJANGO_", "POSTGRES_", "PYTEST_", "VIRTUAL_ENV")) and key not in
           ("REDIS_URL", "PYTHONPATH", "PYTHONHOME", "JWT_ACCESS_MINUTES", "REALTIME_LOG_LEVEL")}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def copy_sources(clone: Path) -> None:
    """What a clone holds for the package: its metadata and the app, not the demo, tests or bench."""
    clone.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, clone / name)
    shutil.copytree(ROOT / "realtime", clone / "realtime", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("project", "bench", "tests"):  # present in a real clone: discovery must leave them out
        (clone / name).mkdir()
        (clone / name / "__init__.py").write_text("")


@dataclass
class Installed:
    work: Path
    site: Path
    venv: Path
    env: dict[str, str]
    wheel: Path
    timings: dict[str, float]

    def python(self, *args: str, timeout: float = 300) -> str:
        return run([str(self.venv / "bin" / "python"), *args], self.site, self.env, timeout)

    def manage(self, *args: str) -> str:
        return self.python("manage.py", *args)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    """Steps of the README, in order, in a fresh venv; the project migrated and with one user."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("install")
    work = tmp / "work"
    work.mkdir()
    copy_sources(work / CLONE)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = clean_env(venv)
    timings["venv"] = time.monotonic() - started

    steps = snippets()
    run(f"set -euo pipefail\n{steps[0].code}", work, env)
    timings["README shell steps"] = time.monotonic() - started - sum(timings.values())
    site = work / "mysite"
    for step in steps[1:]:
        path = site / step.target
        if step.action == "append":
            path.write_text(path.read_text() + "\n\n" + step.code + "\n")
        else:
            path.write_text(step.code + "\n")
    wheel = next((work / "dist").glob("*.whl"))
    installed = Installed(work, site, venv, env, wheel, timings)
    installed.manage("migrate", "--noinput", "-v0")
    installed.env = {**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD}
    installed.manage("createsuperuser", "--noinput", "--username", USER, "--email", "ada@example.com")
    installed.env = env
    timings["migrate and a user"] = time.monotonic() - started - sum(timings.values())
    return installed


@pytest.fixture(scope="module")
def server(installed: Installed):
    """daphne from the new venv, serving the new project, stopped by its PID."""
    port = free_port()
    log = open(installed.work / "daphne.log", "wb")
    process = subprocess.Popen(
        [str(installed.venv / "bin" / "daphne"), "-b", "127.0.0.1", "-p", str(port), "mysite.asgi:application"],
        cwd=installed.site, env=installed.env, stdout=log, stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        wait_for_port(port, timeout=60, process=process)
        yield f"127.0.0.1:{port}"
    finally:
        stop(process)
        print((installed.work / "daphne.log").read_text(errors="replace")[-3000:])


# -- what was installed -----------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_the_wheel_holds_the_app_alone_with_its_static_files_and_runtime_dependencies(installed):
    print("install test set-up:", ", ".join(f"{step} {seconds:.1f} s" for step, seconds in installed.timings.items()))
    assert installed.wheel.name == f"django_realtime_endpoints-{realtime.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(f"django_realtime_endpoints-{realtime.__version__}.dist-info/METADATA").decode()

    dist_info = f"django_realtime_endpoints-{realtime.__version__}.dist-info"
    assert {name.split("/")[0] for name in names} == {"realtime", dist_info}
    assert "realtime/static/realtime/realtime.js" in names
    assert "realtime/management/commands/realtime_routes.py" in names and "realtime/py.typed" in names
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, re.M)
    runtime = {re.split(r"[<>=!; \[]", line, maxsplit=1)[0].lower() for line in requires if "extra ==" not in line}
    assert runtime == {
        "django", "channels", "daphne", "djangorestframework", "djangorestframework-simplejwt", "cryptography",
    }
    extras = {re.split(r"[<>=!; ]", line, maxsplit=1)[0].lower() for line in requires if 'extra == "redis"' in line}
    assert extras == {"channels-redis", "redis"}
    metrics = {re.split(r"[<>=!; ]", line, maxsplit=1)[0].lower() for line in requires if 'extra == "metrics"' in line}
    assert metrics == {"prometheus-client"}

    found = json.loads(installed.python("-c", (
        "import importlib.metadata as m, importlib.util as u, json, realtime; "
        f"print(json.dumps([realtime.__file__, realtime.__version__, m.version({DIST!r}), "
        "[u.find_spec(n) is not None for n in ('project', 'bench', 'tests', 'pytest', 'channels_redis')]]))"
    )))
    assert Path(found[0]).is_relative_to(installed.venv)  # the installed copy, not this repository
    assert found[1] == found[2] == realtime.__version__
    assert found[3] == [False, False, False, False, False]  # no demo, tests, test tools or extras


@pytest.mark.timeout(300)
def test_pip_install_of_the_clone_itself_installs_the_same_app(installed):
    venv = installed.work.parent / "venv-source"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    # The new venv's pip (with --python) installs the clone itself; the first venv already holds the deps.
    run([str(installed.venv / "bin" / "python"), "-m", "pip", "--python", str(venv / "bin" / "python"),
         "install", "-q", "--no-deps", str(installed.work / CLONE)], installed.work, installed.env)
    out = run([str(venv / "bin" / "python"), "-c", (
        "import importlib.metadata as m, importlib.resources as r; "
        f"print(m.version({DIST!r}), (r.files('realtime') / 'static/realtime/realtime.js').is_file())"
    )], installed.work, installed.env)
    assert out.split() == [realtime.__version__, "True"]


# -- the new project, served -------------------------------------------------------------------------


async def token(server: str) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"http://{server}/api/auth/token/", json={"username": USER, "password": PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access", "refresh"}
    return body["access"]


async def echo(url: str) -> dict:
    async with websockets.connect(url, open_timeout=10) as ws:
        await ws.send(json.dumps({"hello": "world"}))
        return json.loads(await asyncio.wait_for(ws.recv(), 10))


@pytest.mark.timeout(300)
async def test_echo_socket_answers(server):
    assert await echo(f"ws://{server}/api/myapp/ws/echo") == {"echo": {"hello": "world"}}


@pytest.mark.timeout(300)
async def test_protected_stream_needs_a_token_from_the_token_endpoint(server):
    async with httpx.AsyncClient(timeout=10) as client:
        denied = await client.get(f"http://{server}/api/myapp/events/chat")
        assert denied.status_code == 401 and denied.text.startswith("event: error\n")
        access = await token(server)
        async with aconnect_sse(client, "GET", f"http://{server}/api/myapp/events/chat",
                                headers={"Authorization": f"Bearer {access}"}) as source:
            assert source.response.status_code == 200
            event = await asyncio.wait_for(anext(source.aiter_sse()), 10)
    assert (event.event, json.loads(event.data)) == ("hello", {"user": USER})


@pytest.mark.timeout(300)
async def test_channel_fans_a_message_out_to_every_socket_and_stream(server):
    access = await token(server)
    chat = f"ws://{server}/api/myapp/ws/chat?token={access}"
    async with httpx.AsyncClient(timeout=30) as client, aconnect_sse(
        client, "GET", f"http://{server}/api/myapp/events/chat", headers={"Authorization": f"Bearer {access}"}
    ) as source, websockets.connect(chat, open_timeout=10) as alice, websockets.connect(chat, open_timeout=10) as bob:
        events = source.aiter_sse()
        assert (await asyncio.wait_for(anext(events), 10)).event == "hello"
        # Subscriptions start as each stream begins: say hello until every subscriber has heard one.
        heard = {"alice": None, "bob": None, "sse": None}

        async def listen(name, receive):
            while heard[name] is None:
                heard[name] = await receive()

        async def sse_message():
            event = await anext(events)
            return json.loads(event.data) if event.event == "message" else None

        listeners = [
            asyncio.create_task(listen("alice", lambda: alice.recv())),
            asyncio.create_task(listen("bob", lambda: bob.recv())),
            asyncio.create_task(listen("sse", sse_message)),
        ]
        async with asyncio.timeout(20):
            n = 0
            while None in heard.values():
                n += 1
                await alice.send(json.dumps(f"hello {n}"))
                await asyncio.wait(listeners, timeout=0.3)
        for task in listeners:
            task.result()
    received = [json.loads(heard[name]) for name in ("alice", "bob")] + [heard["sse"]]
    for message in received:
        assert message["from"] == USER and re.fullmatch(r"hello \d+", message["text"])


@pytest.mark.timeout(300)
async def test_chat_refuses_anonymous_sockets_with_4003(server):
    async with websockets.connect(f"ws://{server}/api/myapp/ws/chat", open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd.code == 4003


@pytest.mark.timeout(300)
def test_the_readme_settings_pass_the_checks_for_one_process_and_for_several(installed):
    assert installed.manage("check").strip() == "System check identified no issues (0 silenced)."
    several = run([str(installed.venv / "bin" / "python"), "manage.py", "check"], installed.site,
                  {**installed.env, "REDIS_URL": "redis://127.0.0.1:6379/15"})  # nothing connects to it
    assert several.strip() == "System check identified no issues (0 silenced)."


@pytest.mark.timeout(300)
def test_realtime_routes_lists_the_new_apps_endpoints(installed):
    routes = json.loads(installed.manage("realtime_routes", "--json"))
    assert [(r["protocol"], r["path"], r["view"], r["permissions"], r["tags"]) for r in routes] == [
        ("sse", "/api/myapp/events/chat", "myapp.routing.ChatEvents", ["IsAuthenticated"], ["My app"]),
        ("websocket", "/api/myapp/ws/chat", "myapp.routing.ChatWS", ["IsAuthenticated"], ["My app"]),
        ("websocket", "/api/myapp/ws/echo", "myapp.routing.EchoWS", ["AllowAny"], ["My app"]),
    ]


@pytest.mark.timeout(300)
async def test_runserver_serves_websockets_and_the_js_client(installed):
    port = free_port()
    log = open(installed.work / "runserver.log", "wb")
    process = subprocess.Popen(
        [str(installed.venv / "bin" / "python"), "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=installed.site, env=installed.env, stdout=log, stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        await asyncio.to_thread(wait_for_port, port, 60, process)
        assert await echo(f"ws://127.0.0.1:{port}/api/myapp/ws/echo") == {"echo": {"hello": "world"}}
        async with httpx.AsyncClient(timeout=10) as client:
            script = await client.get(f"http://127.0.0.1:{port}/static/realtime/realtime.js")
        assert script.status_code == 200 and "export function listen" in script.text
    finally:
        stop(process)
