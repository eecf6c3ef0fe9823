"""The documentation's tutorial, followed verbatim in a fresh virtualenv and a new project.

The test builds the wheel from a copy of the app's sources (a git clone of its own, which must stay
clean), installs it with its declared dependencies from the package index pip is configured with,
runs ``django-admin startproject``, writes every snippet of the tutorial's pages (docs/tutorial/)
where its marker (``<!-- install: ... -->``, tests/docs_blocks.py) says, runs each client script
(``<!-- run: ... -->``) against daphne, then the last page's two daphne processes over Redis with
presence shared, and the testing how-to's example with the ``[testing]`` extra and its pytest
configuration.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import shlex
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
from tests.docs_blocks import TUTORIAL, Block, marked
from tests.isolation import redis_db
from tests.servers import ROOT, free_port, redis_available, require, stop, wait_for_port

TESTING_HOWTO = "howto/testing.md"
CLONE = "path/to/realtime"  # how the tutorial names the clone; the test puts its copy there
DIST = "django-realtime-endpoints"
USER, PASSWORD = "ada", "install-test-pw-42"


@dataclass
class Snippet:
    action: str  # "shell", "append" or "write"
    target: str | None
    language: str
    code: str


def snippets(*pages: str) -> list[Snippet]:
    """The ``install`` blocks of ``pages`` (default: the tutorial), in reading order."""
    found = []
    for block in marked("install", *(pages or TUTORIAL)):
        action, _, target = block.argument.partition(" ")
        found.append(Snippet(action, target or None, block.language, block.code))
    return found


def client_script(name: str) -> Block:
    (block,) = [block for block in marked("run", *TUTORIAL) if block.argument == name]
    return block


def test_tutorial_marks_every_step_and_avoids_the_demos_routes():
    steps = snippets()
    assert [(s.action, s.target) for s in steps] == [
        ("shell", None),
        ("append", "mysite/settings.py"),
        ("write", "myapp/routing.py"),
        ("write", "mysite/routing.py"),
        ("write", "mysite/asgi.py"),
        ("write", "mysite/urls.py"),
        ("append", "myapp/routing.py"),  # tokens: the chat
        ("append", "myapp/routing.py"),  # SSE
        ("write", "myapp/topics.py"),  # a Topic
        ("append", "myapp/routing.py"),
        ("redis", None),  # two processes
        ("serve", None),
    ]
    assert [(s.action, s.target) for s in snippets(TESTING_HOWTO)] == [
        ("testing", None), ("write", "pyproject.toml"), ("append", "mysite/settings.py"),
    ]
    for step in steps:
        if step.language == "python":
            compile(step.code, step.target, "exec")
    assert CLONE in steps[0].code
    assert f"django_realtime_endpoints-{realtime.__version__}-py3-none-any.whl" in steps[0].code
    routing = "\n".join(step.code for step in steps if step.target == "myapp/routing.py")
    assert 'Router(prefix="/myapp"' in routing
    for prefix in ("/chat", "/events", "/trading"):  # the demo's routers, served under /api too
        assert f'Router(prefix="{prefix}"' not in routing
    assert [block.argument for block in marked("run", *TUTORIAL)] == ["echo", "chat", "sse", "topic", "redis"]


# -- the fresh virtualenv and project -------------------------------------------------------------


def run(command: list[str] | str, cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    script = isinstance(command, str)  # a tutorial shell block, run by bash as a user's shell would
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
    """What a clone holds for the package: its metadata and the app, not the demo, tests or bench.

    The copy is a git repository with everything committed, as a fresh clone is, so that what a
    build writes into it shows in ``git status`` (ignored files included).
    """
    clone.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", ".gitignore"):
        shutil.copy(ROOT / name, clone / name)
    shutil.copytree(ROOT / "realtime", clone / "realtime", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("project", "bench", "tests"):  # present in a real clone: discovery must leave them out
        (clone / name).mkdir()
        (clone / name / "__init__.py").write_text("")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=clone, check=True, timeout=60)
    subprocess.run(["git", "add", "-A"], cwd=clone, check=True, timeout=60)
    subprocess.run([*git, "commit", "-q", "-m", "clone"], cwd=clone, check=True, timeout=60)


def untracked_in(clone: Path) -> list[str]:
    """What is in the clone beyond its commit, ignored files included (build/, *.egg-info ...)."""
    out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=clone,
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return out.splitlines()


def write_files(site: Path, steps: list[Snippet]) -> None:
    """The ``write`` and ``append`` steps, in order, into the new project."""
    for step in steps:
        path = site / step.target if step.target else None
        if step.action == "append":
            path.write_text(path.read_text() + "\n\n" + step.code + "\n")
        elif step.action == "write":
            path.write_text(step.code + "\n")


@dataclass
class Installed:
    work: Path
    site: Path
    venv: Path
    env: dict[str, str]
    wheel: Path
    timings: dict[str, float]
    clone_after_build: list[str] | None = None

    def python(self, *args: str, timeout: float = 300) -> str:
        return run([str(self.venv / "bin" / "python"), *args], self.site, self.env, timeout)

    def manage(self, *args: str) -> str:
        return self.python("manage.py", *args)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    """Steps of the tutorial, in order, in a fresh venv; the project migrated and with one user."""
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
    timings["tutorial shell steps"] = time.monotonic() - started - sum(timings.values())
    site = work / "mysite"
    write_files(site, steps)
    wheel = next((work / "dist").glob("*.whl"))
    installed = Installed(work, site, venv, env, wheel, timings)
    installed.clone_after_build = untracked_in(work / CLONE)
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
    # The npm package's own files: Node loads the copy in site-packages as an ES module without a warning.
    assert {"realtime/static/realtime/package.json", "realtime/static/realtime/realtime.d.ts"} <= set(names)
    assert "realtime/client/client.py" in names
    assert "realtime/management/commands/realtime_routes.py" in names and "realtime/py.typed" in names
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, re.M)
    runtime = {re.split(r"[<>=!; \[]", line, maxsplit=1)[0].lower() for line in requires if "extra ==" not in line}
    assert runtime == {"django", "channels", "daphne", "djangorestframework", "djangorestframework-simplejwt",
                       "cryptography"}

    def extra(name: str) -> set[str]:
        return {re.split(r"[<>=!; ]", line, maxsplit=1)[0].lower() for line in requires
                if re.search(rf"""extra == ["']{name}["']""", line)}

    assert extra("redis") == {"channels-redis", "redis"}
    assert extra("metrics") == {"prometheus-client"}
    assert extra("testing") == {"pytest-django", "pytest-asyncio"}
    assert extra("client") == {"websockets"}
    assert extra("nats") == {"nats-py", "msgpack"}

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
    assert untracked_in(installed.work / CLONE) == []  # nor did installing from it write into the clone


@pytest.mark.timeout(300)
def test_building_the_wheel_leaves_the_clone_as_it_was(installed):
    # setuptools wrote build/ and django_realtime_endpoints.egg-info/ here (git-ignored, so only
    # --ignored shows them); hatchling writes nothing into the source tree.
    assert installed.clone_after_build == []
    assert list((installed.work / "dist").iterdir()) == [installed.wheel]


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
def test_the_tutorial_settings_pass_the_checks_for_one_process_and_for_several(installed):
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
        ("websocket", "/api/myapp/ws/rooms", "myapp.routing.RoomsSocket", ["AllowAny"], ["My app"]),
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


# -- the pages' client scripts, run as written against the new project ------------------------------


def run_client(name: str, servers: dict[str, str], env: dict[str, str], cwd: Path) -> list:
    """A ``run`` block, its addresses pointed at the test's servers, run by this suite's Python (which
    has the clients it imports: websockets, httpx); each printed line, parsed."""
    code = client_script(name).code
    for written, actual in servers.items():
        assert written in code, f"the {name!r} script no longer names {written}"
        code = code.replace(written, actual)
    out = run([sys.executable, "-c", code], cwd, {**env, "PATH": os.environ["PATH"]}, timeout=120)
    return [parse_line(line) for line in out.splitlines()]


def parse_line(line: str):
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(line)
        except (ValueError, SyntaxError):
            pass
    return line


@pytest.mark.timeout(300)
def test_the_tutorials_client_scripts_print_what_the_pages_say(installed, server):
    here = {"127.0.0.1:8000": server}
    assert run_client("echo", here, installed.env, installed.work) == [{"echo": {"hello": "world"}}]
    assert run_client("chat", here, installed.env, installed.work) == [{"from": USER, "text": "hello"}]
    sse = run_client("sse", here, installed.env, installed.work)
    assert "event: hello" in sse and sse[-1].startswith("data:") and json.loads(sse[-1][5:]) == {"user": USER}
    topic = run_client("topic", here, installed.env, installed.work)
    subscribed, join, published, message = topic
    assert subscribed["ok"] is True and subscribed["data"]["channel"] == "room:lobby"
    assert join["op"] == "join" and join["member"]["info"] == {"name": USER} and join["member"]["connections"] == 1
    assert published["ok"] is True and published["data"]["id"]
    assert message["op"] == "message" and message["data"] == {"text": "hello", "from": USER}
    assert message["id"] == published["data"]["id"]


# -- the last page: two processes over Redis with presence shared (last: it installs the extra) ---


@pytest.fixture(scope="module")
def two_processes(installed: Installed):
    """The page's shell steps with this run's Redis database, then its two daphne, stopped by PID."""
    require(redis_available(), "Redis on 127.0.0.1:6379 (the tutorial's two processes)")
    written, url = "redis://127.0.0.1:6379/0", f"redis://127.0.0.1:6379/{redis_db()}"
    steps = {step.action: step.code for step in snippets()}
    assert written in steps["redis"] and written in steps["serve"]
    checked = run(f"set -euo pipefail\n{steps['redis'].replace(written, url)}", installed.site, installed.env)
    commands = [shlex.split(line.rstrip(" &")) for line in steps["serve"].splitlines() if line.startswith("daphne ")]
    assert [command[:2] for command in commands] == [["daphne", "-p"], ["daphne", "-p"]]
    env = {**installed.env, "REDIS_URL": url}
    processes, servers = [], {}
    try:
        for command in commands:
            port = free_port()
            servers[f"127.0.0.1:{command[2]}"] = f"127.0.0.1:{port}"
            argv = [str(installed.venv / "bin" / "daphne"), "-b", "127.0.0.1", "-p", str(port), *command[3:]]
            log = open(installed.work / f"daphne-{command[2]}.log", "wb")
            processes.append(subprocess.Popen(argv, cwd=installed.site, env=env, stdout=log, stderr=subprocess.STDOUT))
            log.close()
        for process, port in zip(processes, servers.values(), strict=True):
            wait_for_port(int(port.rsplit(":", 1)[1]), timeout=60, process=process)
        yield checked, servers, env
    finally:
        for process in processes:
            stop(process)


@pytest.mark.timeout(300)
def test_two_processes_over_redis_share_presence_and_messages(installed, two_processes):
    checked, servers, env = two_processes
    assert checked.strip().splitlines()[-1] == "System check identified no issues (0 silenced)."  # after pip's lines
    members, message = run_client("redis", servers, env, installed.work)
    assert [(m["info"], m["connections"]) for m in members] == [({"name": USER}, 2)]  # one user, one per process
    assert message == {"text": "across", "from": USER}


# -- the testing how-to in the same project (last: it installs the [testing] extra) -----------------


@pytest.mark.timeout(600)
def test_the_testing_howtos_example_passes_in_the_new_project(installed):
    steps = snippets(TESTING_HOWTO)
    run(f"set -euo pipefail\n{steps[0].code}", installed.site, installed.env)
    write_files(installed.site, steps)
    for block in marked("example", TESTING_HOWTO):
        (installed.site / block.argument).write_text(block.code + "\n")
    result = subprocess.run([str(installed.venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "inbox"], cwd=installed.site, env=installed.env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\b7 passed\b", result.stdout), result.stdout[-2000:]
