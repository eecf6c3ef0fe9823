"""On real daphne processes: route specificity, STRICT_TOKENS' 4001, and revoke_user across two
processes sharing the Redis at 127.0.0.1:6379."""

import asyncio
import json
import subprocess
import time
import uuid
from datetime import timedelta

import httpx
import pytest
import redis
import websockets
from websockets.exceptions import ConnectionClosed

from realtime.pubsub.channel import group_name
from realtime.revocation import CONTROL_CHANNEL
from tests.isolation import redis_db
from tests.servers import PYTHON, ROOT, Daphne, prepare_database, redis_available, require
from tests.sse_client import text_until
from tests.test_websocket_live import close_of, first_json, forged
from tests.waiting import await_until, layer_group, redis_subscriptions

pytestmark = pytest.mark.timeout(180)


# -- route specificity ------------------------------------------------------------------------------


async def test_protected_static_route_registered_after_a_public_parameter_is_served_by_its_view(live):
    # tests/liveapp/routing.py registers /rooms/{room} (public) first, then /rooms/moderation (protected).
    assert await close_of(f"{live.ws}/api/t/rooms/moderation") == (4003, "Authentication required")
    served = await first_json(f"{live.ws}/api/t/rooms/moderation?token={live.token('plain')}")
    assert served == {"view": "moderation", "user": "plain"}
    assert await first_json(f"{live.ws}/api/t/rooms/lobby") == {"view": "room", "room": "lobby"}


# -- STRICT_TOKENS: today's distinct 4001 behaviour, opt-in ----------------------------------------


@pytest.fixture(scope="module")
def strict(tmp_path_factory, output_dir):
    """A daphne serving the live test endpoints with REALTIME["STRICT_TOKENS"] = True."""
    env, users = prepare_database(
        tmp_path_factory.mktemp("strict"),
        {"DJANGO_SETTINGS_MODULE": "tests.auth_settings", "REALTIME_STRICT_TOKENS": "1"},
    )
    server = Daphne(env, output_dir / "daphne-strict.log").start()
    yield server, users
    server.stop()


@pytest.mark.parametrize("path", ["/api/t/hello/1", "/api/t/private"], ids=["public", "protected"])
@pytest.mark.parametrize(
    ("make", "reason_code"),
    [
        (lambda ids: forged(ids["plain"], lifetime=-timedelta(seconds=5)), "token_expired"),
        (lambda ids: "not.a.token", "token_not_valid"),
        (lambda ids: forged(ids["inactive"]), "user_inactive"),
    ],
    ids=["expired", "garbage", "inactive"],
)
async def test_strict_tokens_close_4001_on_every_endpoint(strict, path, make, reason_code):
    server, users = strict
    code, reason = await close_of(f"{server.ws_url}{path}?token={make(users)}")
    assert (code, reason.split(": ")[0]) == (4001, reason_code)


async def test_strict_tokens_close_an_open_connection_4001_when_its_token_expires(strict):
    server, users = strict
    token = forged(users["plain"], lifetime=timedelta(seconds=2))
    async with websockets.connect(f"{server.ws_url}/api/t/private?token={token}") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(6):
                while True:
                    await ws.recv()
    assert closed.value.rcvd.code == 4001
    assert closed.value.rcvd.reason.startswith("token_expired: ")


async def test_strict_tokens_answer_401_on_a_public_sse_endpoint(strict):
    server, users = strict
    stale = forged(users["plain"], lifetime=-timedelta(seconds=5))
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{server.url}/api/t/sse/quiet?token={stale}")  # a public SSEView
    assert response.status_code == 401
    assert '"code":"token_expired"' in response.text


async def test_default_serves_a_public_sse_endpoint_to_a_stale_token_as_anonymous(live):
    stale = forged(live.users["plain"], lifetime=-timedelta(seconds=5))
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("GET", f"{live.url}/api/t/sse/quiet?token={stale}") as response:
            assert response.status_code == 200
            assert "event: hello" in await text_until(response.aiter_text(), "event: hello")
        response = await client.get(f"{live.url}/api/t/sse/notifications?token={stale}")
    assert response.status_code == 401
    assert json.loads(response.text.split("data: ", 1)[1])["code"] == "token_expired"


async def test_the_log_says_what_a_refused_token_led_to(live):
    inactive = forged(live.users["inactive"])
    # A protected endpoint refuses the connection (4003 with the refusal): the log says so.
    code, reason = await close_of(f"{live.ws}/api/t/private?token={inactive}")
    assert (code, reason.split(": ")[0]) == (4003, "user_inactive")
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"{live.url}/api/t/sse/notifications?token={inactive}")).status_code == 401
    # A public one serves the client as anonymous: the log says that.
    assert (await first_json(f"{live.ws}/api/t/hello/26?token={inactive}"))["user"] is None
    expected = [
        "Refused a token (user_inactive) at /api/t/private; the endpoint refuses anonymous clients: "
        "the connection is refused",
        "Refused a token (user_inactive) at /api/t/sse/notifications; the endpoint refuses anonymous clients: "
        "the connection is refused",
        "Refused a token (user_inactive) at /api/t/hello/26; the endpoint is public: going on as anonymous",
    ]
    log = live.server.log()  # each line is written before the close, the 401 or the first message
    assert [line for line in expected if line not in log] == []
    assert "at /api/t/private; the endpoint is public" not in log
    assert inactive not in log


# -- revoke_user across two processes --------------------------------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory, output_dir):
    """Two daphne processes sharing one SQLite file and the Redis at 127.0.0.1:6379 (own layer prefix)."""
    require(redis_available(), "Redis on 127.0.0.1:6379")
    prefix = f"test-revoke-{uuid.uuid4().hex[:12]}"
    env, users = prepare_database(
        tmp_path_factory.mktemp("revoke"),
        {"DJANGO_SETTINGS_MODULE": "tests.auth_settings", "REDIS_URL": f"redis://127.0.0.1:6379/{redis_db()}",
         "CHANNEL_LAYER_PREFIX": prefix},
    )
    a = Daphne(env, output_dir / "daphne-revoke-a.log").start()
    b = Daphne(env, output_dir / "daphne-revoke-b.log").start()
    yield a, b, env, users
    a.stop()
    b.stop()


def token_for(server, username):
    from tests.liveapp.management.commands.seed_test_users import PASSWORD

    response = httpx.post(f"{server.url}/api/auth/token/", json={"username": username, "password": PASSWORD})
    response.raise_for_status()
    return response.json()["access"]


async def manage_shell(env, code):
    result = await asyncio.to_thread(
        subprocess.run, [PYTHON, "manage.py", "shell", "-c", code], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr


async def test_queryset_update_closes_nothing_and_revoke_user_closes_every_process(pair):
    a, b, env, users = pair
    token = await asyncio.to_thread(token_for, a, "subscriber")
    bystander = await asyncio.to_thread(token_for, b, "plain")
    ws_a = await websockets.connect(f"{a.ws_url}/api/t/private?token={token}")
    ws_b = await websockets.connect(f"{b.ws_url}/api/t/private?token={token}")
    other = await websockets.connect(f"{b.ws_url}/api/t/private?token={bystander}")
    async with httpx.AsyncClient(timeout=10) as client, client.stream(
        "GET", f"{b.url}/api/t/sse/forever?token={token}"
    ) as sse:
        assert sse.status_code == 200
        body = sse.aiter_text()
        assert "event: open" in await text_until(body, "event: open")
        revocations = layer_group(group_name(CONTROL_CHANNEL), env["CHANNEL_LAYER_PREFIX"])
        broker = redis.Redis.from_url(env["REDIS_URL"])
        await await_until(lambda: redis_subscriptions(broker, revocations) == 2, interval=0.05,
                          message="both processes subscribed to the revocations")

        # A bulk update sends no post_save: every connection stays open.
        await manage_shell(env, "from django.contrib.auth.models import User; "
                                "User.objects.filter(username='subscriber').update(is_active=False)")
        for ws in (ws_a, ws_b):
            await ws.send('"still open"')
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["msg"] == "still open"

        # revoke_user from a third process, which serves no connection itself.
        await manage_shell(env, f"import realtime; realtime.revoke_user({users['subscriber']})")
        published = time.monotonic()
        codes = []
        for ws in (ws_a, ws_b):
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(2):
                    while True:
                        await ws.recv()
            codes.append((closed.value.rcvd.code, closed.value.rcvd.reason))
        async with asyncio.timeout(2):
            rest = "".join([chunk async for chunk in body])
        assert time.monotonic() - published < 2
    assert codes == [(4003, "session_revoked")] * 2
    assert rest.endswith('event: error\ndata: {"code":"session_revoked","detail":"Reconnect with a fresh token"}\n\n')
    await other.send('"bystander"')  # another user's connection in the same process is untouched
    assert json.loads(await asyncio.wait_for(other.recv(), 5))["msg"] == "bystander"
    await other.close()
