"""The shipped configuration is safe as it is: signing key, logout, login throttles, caps, origins, logs."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import stat
import subprocess
import uuid
from pathlib import Path

import httpx
import jwt
import pytest
import websockets
from channels.testing import WebsocketCommunicator
from websockets.exceptions import ConnectionClosed

from project.settings import DEMO_SECRET_KEY
from realtime import WebSocketView
from realtime.conf import DEFAULTS
from realtime.redaction import redact
from realtime.security import origin_allowed
from tests.servers import BIN, PYTHON, ROOT, Daphne, require_untrusted_loopback
from tests.waiting import alog_line

pytestmark = pytest.mark.timeout(180)

DEMO_PASSWORDS = {"admin": "admin-pass-123", "editor": "editor-pass-123", "alice": "alice-pass-123"}


def env_without_key(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no secret key, no Redis, the project's own settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SECRET_KEY", "REDIS_URL", "DJANGO_DEBUG")}
    return {**env, "DJANGO_SETTINGS_MODULE": "project.settings", "PYTHONUNBUFFERED": "1", **extra}


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


# -- 1. the signing key ---------------------------------------------------------------------------


def test_debug_off_without_a_secret_key_refuses_to_start(tmp_path):
    env = env_without_key(DJANGO_DEBUG="0", DJANGO_SQLITE_PATH=str(tmp_path / "db.sqlite3"))
    checked = manage(env, "check")
    assert checked.returncode != 0
    assert "ImproperlyConfigured: DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off" in checked.stderr
    # daphne runs no system checks, but loading the settings already stops it.
    daphne = subprocess.run([str(BIN / "daphne"), "-b", "127.0.0.1", "-p", "0", "project.asgi:application"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert daphne.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in daphne.stdout + daphne.stderr
    # The public demo key given explicitly is refused the same way.
    demo = manage({**env, "DJANGO_SECRET_KEY": DEMO_SECRET_KEY}, "check")
    assert demo.returncode != 0 and "DJANGO_SECRET_KEY must be set" in demo.stderr


def test_debug_on_keeps_the_demo_key_and_a_configured_key_starts():
    assert manage(env_without_key(), "check").returncode == 0  # make run
    configured = manage(env_without_key(DJANGO_DEBUG="0", DJANGO_SECRET_KEY=secrets.token_urlsafe(50)), "check")
    assert configured.returncode == 0, configured.stderr


def test_run_prod_key_is_created_once_outside_the_repository_and_kept(tmp_path):
    state = tmp_path / "state"
    env = {**os.environ, "REALTIME_STATE_DIR": str(state)}
    first = subprocess.run([str(ROOT / "scripts" / "secret-key")], env=env, capture_output=True, text=True,
                           timeout=30, check=True)
    key = first.stdout.strip()
    assert len(key) >= 50
    path = state / "secret-key"
    assert path.read_text().strip() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = subprocess.run([str(ROOT / "scripts" / "secret-key")], env=env, capture_output=True, text=True,
                           timeout=30, check=True)
    assert again.stdout.strip() == key
    # A state directory inside the repository is refused: the key must never be committable.
    inside = subprocess.run([str(ROOT / "scripts" / "secret-key")], capture_output=True, text=True, timeout=30,
                            env={**os.environ, "REALTIME_STATE_DIR": str(ROOT / "tmp-state")})
    assert inside.returncode != 0 and "inside the repository" in inside.stderr
    assert not (ROOT / "tmp-state").exists()
    assert "secret-key" in (ROOT / "scripts" / "run-prod").read_text()


def shipped_server(tmp: Path, log: Path) -> Daphne:
    """daphne on the project's settings as shipped (DEBUG off, a random key), on a fresh SQLite file."""
    env = env_without_key(DJANGO_SETTINGS_MODULE="tests.shipped_settings", DJANGO_DEBUG="0",
                          DJANGO_SECRET_KEY=secrets.token_urlsafe(50), DJANGO_SQLITE_PATH=str(tmp / "db.sqlite3"))
    for args in (("migrate", "--noinput", "-v0"), ("demo_users",)):
        result = manage(env, *args)
        assert result.returncode == 0, result.stderr
    return Daphne(env, log).start()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, output_dir):
    server = shipped_server(tmp_path_factory.mktemp("shipped"), output_dir / "daphne-shipped.log")
    yield server
    server.stop()


def test_a_token_signed_with_the_demo_key_is_refused_when_debug_is_off(shipped):
    login = httpx.post(f"{shipped.url}/api/auth/token/", json={"username": "admin", "password": "admin-pass-123"},
                       timeout=10)
    access = login.json()["access"]
    me = httpx.get(f"{shipped.url}/api/trading/me", headers={"Authorization": f"Bearer {access}"}, timeout=10)
    assert me.status_code == 200
    claims = jwt.decode(access, options={"verify_signature": False})
    forged = jwt.encode({**claims, "jti": uuid.uuid4().hex}, DEMO_SECRET_KEY, algorithm="HS256")
    refused = httpx.get(f"{shipped.url}/api/trading/me", headers={"Authorization": f"Bearer {forged}"}, timeout=10)
    assert refused.status_code == 401


# -- 2. logout revokes the refresh token; refresh tokens rotate -----------------------------------


def test_refresh_tokens_rotate_and_a_used_one_is_refused(live):
    tokens = live.tokens("plain")
    first = httpx.post(f"{live.url}/api/auth/token/refresh/", json={"refresh": tokens["refresh"]}, timeout=10)
    assert first.status_code == 200
    assert first.json()["refresh"] != tokens["refresh"]
    replayed = httpx.post(f"{live.url}/api/auth/token/refresh/", json={"refresh": tokens["refresh"]}, timeout=10)
    assert replayed.status_code == 401
    rotated = httpx.post(f"{live.url}/api/auth/token/refresh/", json={"refresh": first.json()["refresh"]}, timeout=10)
    assert rotated.status_code == 200


def test_refresh_after_logout_is_refused(live):
    tokens = live.tokens("plain")
    logout = httpx.post(f"{live.url}/api/auth/logout/", json={"refresh": tokens["refresh"]},
                        headers={"Authorization": f"Bearer {tokens['access']}"}, timeout=10)
    assert logout.status_code == 200
    assert logout.json()["refresh_blacklisted"] is True
    refreshed = httpx.post(f"{live.url}/api/auth/token/refresh/", json={"refresh": tokens["refresh"]}, timeout=10)
    assert refreshed.status_code == 401
    assert refreshed.json()["code"] == "token_not_valid"


# -- 3. login throttling ----------------------------------------------------------------------------


def test_login_is_throttled_per_username_then_per_address(tmp_path, output_dir):
    server = shipped_server(tmp_path, output_dir / "daphne-throttle.log")
    try:
        url = f"{server.url}/api/auth/token/"
        # From 127.0.0.2: not a trusted proxy (REALTIME["TRUSTED_PROXIES"] is loopback 127.0.0.1, ::1).
        transport = httpx.HTTPTransport(local_address=require_untrusted_loopback())
        with httpx.Client(transport=transport, timeout=10) as client:
            wrong = [client.post(url, json={"username": "alice", "password": f"guess-{n}"}) for n in range(10)]
            assert [r.status_code for r in wrong] == [401] * 10
            # The 11th attempt on one username from this address is refused, even with the right password.
            blocked = client.post(url, json={"username": "alice", "password": DEMO_PASSWORDS["alice"]})
            assert blocked.status_code == 429
            assert 0 < int(blocked.headers["Retry-After"]) <= 60
            # Another username from the same address still gets answered, up to 30 attempts in all.
            others = [client.post(url, json={"username": f"user{n}", "password": "x"}) for n in range(19)]
            assert [r.status_code for r in others] == [401] * 19
            thirty_first = client.post(url, json={"username": "editor", "password": DEMO_PASSWORDS["editor"]})
            assert thirty_first.status_code == 429
            assert thirty_first.reason_phrase == "Too Many Requests"  # twisted alone: "Unknown Status"
            assert int(thirty_first.headers["Retry-After"]) > 0
            # A forged X-Forwarded-For from a peer that is no trusted proxy does not make a new address.
            forged = client.post(url, json={"username": "admin", "password": DEMO_PASSWORDS["admin"]},
                                 headers={"X-Forwarded-For": "198.51.100.9"})
            assert forged.status_code == 429
    finally:
        server.stop()


def test_a_brute_force_is_throttled_while_the_owner_logs_in_from_another_address(tmp_path, output_dir):
    """The test process is a trusted proxy (loopback): X-Forwarded-For gives each attempt its client address."""
    server = shipped_server(tmp_path, output_dir / "daphne-lockout.log")
    try:
        url = f"{server.url}/api/auth/token/"
        with httpx.Client(timeout=10) as client:

            def login(address: str, password: str) -> httpx.Response:
                return client.post(url, json={"username": "alice", "password": password},
                                   headers={"X-Forwarded-For": address})

            # One address guessing: ten answers a minute, then 429 for that address.
            guesses = [login("198.51.100.1", f"guess-{n}") for n in range(10)]
            assert [r.status_code for r in guesses] == [401] * 10
            walled = login("198.51.100.1", "guess-10")
            assert walled.status_code == 429 and 0 < int(walled.headers["Retry-After"]) <= 60
            # Meanwhile the owner, from home: answered, and in.
            owner = login("198.51.100.200", DEMO_PASSWORDS["alice"])
            assert owner.status_code == 200 and owner.json()["access"]
            assert login("198.51.100.1", DEMO_PASSWORDS["alice"]).status_code == 429

            # Many addresses guessing: past 30 attempts a minute on the username, each address gets one.
            spread = [login(f"203.0.113.{n}", f"spread-{n}") for n in range(1, 31)]
            assert [r.status_code for r in spread] == [401] * 30
            again = login("203.0.113.1", "spread-again")
            assert again.status_code == 429 and 0 < int(again.headers["Retry-After"]) <= 60
            # The owner from yet another address still gets in, at the first try.
            owner = login("198.51.100.201", DEMO_PASSWORDS["alice"])
            assert owner.status_code == 200 and owner.json()["access"]
            # Other usernames are not slowed by alice's attack.
            editor = client.post(url, json={"username": "editor", "password": DEMO_PASSWORDS["editor"]},
                                 headers={"X-Forwarded-For": "203.0.113.2"})
            assert editor.status_code == 200
    finally:
        server.stop()


# -- 4. default caps --------------------------------------------------------------------------------


class Echo(WebSocketView):
    keepalive = 0

    async def on_receive(self, ws, data):
        await ws.send_json(data)


async def test_the_default_per_address_cap_is_reached():
    limit = DEFAULTS["MAX_CONNECTIONS_PER_IP"]
    assert isinstance(limit, int) and 0 < limit <= 1000
    app = Echo.as_asgi()

    async def from_one_address(scope, receive, send):
        await app({**scope, "client": ("192.0.2.8", 40000)}, receive, send)

    clients = [WebsocketCommunicator(from_one_address, "/ws") for _ in range(limit + 1)]
    try:
        for client in clients:
            assert (await client.connect())[0]
        for client in clients[:limit]:
            await client.send_json_to("here")
            assert await client.receive_json_from() == "here"
        refused = await clients[-1].receive_output()
        assert (refused["type"], refused["code"], refused["reason"]) == ("websocket.close", 1008,
                                                                          "Too many connections")
    finally:
        for client in clients:
            await client.disconnect()


async def test_the_default_per_user_cap_is_reached_on_a_live_server(live):
    limit = DEFAULTS["MAX_CONNECTIONS_PER_USER"]
    assert isinstance(limit, int) and 0 < limit <= 1000
    token = live.token("subscriber")
    sockets = []
    try:
        for _ in range(limit):
            sockets.append(await websockets.connect(f"{live.ws}/api/t/private?token={token}", open_timeout=20))
        await sockets[-1].send('"last"')
        assert json.loads(await asyncio.wait_for(sockets[-1].recv(), 10))["msg"] == "last"
        async with websockets.connect(f"{live.ws}/api/t/private?token={token}", open_timeout=20) as extra:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(extra.recv(), 10)
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "Too many connections")
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


def test_caps_have_defaults_and_stay_overridable(settings):
    from realtime.conf import setting

    assert {name: DEFAULTS[name] for name in ("MAX_CONNECTIONS_PER_USER", "MAX_CONNECTIONS_PER_IP",
                                              "MAX_SSE_STREAMS_PER_USER")} == {
        "MAX_CONNECTIONS_PER_USER": 50, "MAX_CONNECTIONS_PER_IP": 200, "MAX_SSE_STREAMS_PER_USER": 20}
    settings.REALTIME = {"MAX_CONNECTIONS_PER_IP": None}
    assert setting("MAX_CONNECTIONS_PER_IP") is None
    assert setting("MAX_CONNECTIONS_PER_USER") == 50


# -- 8. origins: scheme, host and port --------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "origin", "allowed"),
    [
        ("127.0.0.1:8000", "http://127.0.0.1:8000", True),  # make run
        ("localhost:8000", "http://localhost:8000", True),
        ("127.0.0.1:8080", "http://127.0.0.1:8080", True),  # make run-prod, through nginx
        ("[::1]:8000", "http://[::1]:8000", True),
        ("LOCALHOST:8000", "http://localhost:8000", True),
        ("localhost", "http://localhost:80", True),  # default ports are the same origin
        ("127.0.0.1:8000", "http://127.0.0.1:9999", False),  # another port
        ("localhost:8000", "https://localhost", False),  # another scheme and port
        ("localhost", "https://localhost", False),  # another scheme
        ("127.0.0.1:8000", "http://localhost:8000", False),  # another host
        ("evil.example:8000", "http://evil.example:8000", False),  # a Host ALLOWED_HOSTS refuses (rebinding)
        ("127.0.0.1:8000", "null", False),
        ("127.0.0.1:8000", "http://127.0.0.1.evil.example:8000", False),
        (None, "http://127.0.0.1:8000", False),  # no Host: nothing to be the same origin as
        ("127.0.0.1:8000", None, True),  # no Origin: not a browser
    ],
)
def test_origin_is_compared_by_scheme_host_and_port(host, origin, allowed):
    headers = {name: value for name, value in (("host", host), ("origin", origin)) if value is not None}
    assert origin_allowed(headers, "ws") is allowed


def test_wss_and_a_tls_proxy_header_make_the_own_origin_https(settings):
    headers = {"host": "localhost", "origin": "https://localhost"}
    assert origin_allowed(headers, "wss")
    assert not origin_allowed(headers, "ws")
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert origin_allowed({**headers, "x-forwarded-proto": "https"}, "ws")
    assert not origin_allowed({**headers, "x-forwarded-proto": "http"}, "ws")


def test_configured_origins_are_matched_like_csrf_trusted_origins(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com"]
    settings.REALTIME = {"ALLOWED_ORIGINS": ["http://localhost:3000", "https://*.example.org"]}
    host = {"host": "127.0.0.1:8000"}
    for origin, allowed in [
        ("https://app.example.com", True),
        ("http://app.example.com", False),
        ("https://app.example.com:8443", False),
        ("http://localhost:3000", True),
        ("http://localhost:3001", False),
        ("https://eu.example.org", True),
        ("https://example.org.evil.example", False),
        ("http://eu.example.org", False),
    ]:
        assert origin_allowed({**host, "origin": origin}, "ws") is allowed, origin
    settings.REALTIME = {"ALLOWED_ORIGINS": ["*"]}
    assert origin_allowed({**host, "origin": "http://anything.example:1"}, "ws")
    settings.REALTIME = {"ALLOWED_ORIGINS": ["localhost"]}
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="'https://localhost'"):
        origin_allowed({**host, "origin": "http://localhost"}, "ws")


async def test_another_port_is_refused_and_the_same_origin_served_on_a_live_server(live):
    port = live.server.port
    async with websockets.connect(f"{live.ws}/api/t/echo/o", origin=f"http://127.0.0.1:{port}") as ws:
        await ws.send('"same origin"')
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"echo": "same origin"}
    for origin in ("http://127.0.0.1:9999", "https://localhost", f"https://127.0.0.1:{port}"):
        async with websockets.connect(f"{live.ws}/api/t/echo/o", origin=origin) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "Origin not allowed"), origin


# -- 9. log redaction on decoded names --------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/x?token=abc.def&lastEventId=4", "/api/x?token=[redacted]&lastEventId=4"),
        ("/api/x?a=1&access_token=zzz", "/api/x?a=1&access_token=[redacted]"),
        ("/api/x?%74oken=abc.def", "/api/x?%74oken=[redacted]"),
        ("/api/x?a=1&to%6Ben=abc&b=2", "/api/x?a=1&to%6Ben=[redacted]&b=2"),
        ("/api/x?%54OKEN=abc", "/api/x?%54OKEN=[redacted]"),
        ("/api/x?refresh=abc", "/api/x?refresh=[redacted]"),
        ("/api/x?tokens=1&x=token=abc", "/api/x?tokens=1&x=token=abc"),
        ("/api/x", "/api/x"),
    ],
)
def test_redaction_matches_decoded_parameter_names(path, expected):
    assert redact(path) == expected


async def test_an_encoded_token_name_authenticates_and_is_not_logged(live):
    token = live.token("plain")
    async with websockets.connect(f"{live.ws}/api/t/private?%74oken={token}") as ws:  # logged without query
        await ws.send('"encoded"')
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"user": "plain@example.com", "msg": "encoded"}
    async with httpx.AsyncClient(timeout=10) as client:
        served = await client.get(f"{live.url}/api/t/sse/owner/{live.users['plain']}?%74oken={token}")
        assert served.status_code == 200  # the application decodes the name: this token authenticated
        assert "event: owner" in served.text
        await client.get(f"{live.url}/api/t/sse/owner/0?a=1&to%6Ben={token}")
    await alog_line(live.server.log, "to%6Ben=[redacted]")
    log = live.server.log()
    assert f"/api/t/sse/owner/{live.users['plain']}?%74oken=[redacted]" in log
    assert "/api/t/sse/owner/0?a=1&to%6Ben=[redacted]" in log
    assert token not in log
    assert token.split(".")[2] not in log
