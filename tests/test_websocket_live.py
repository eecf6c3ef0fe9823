"""WebSocket endpoints on a real daphne over real sockets: auth, permissions, spec examples, leaks."""

import asyncio
import json
from datetime import timedelta

import jwt
import pytest
import websockets
from django.conf import settings
from rest_framework_simplejwt.tokens import AccessToken
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.waiting import alog_line, asettled, await_until, live_subscribers, quiet_live, quiet_subscribers

pytestmark = pytest.mark.timeout(120)


async def close_of(url, send=None, **kwargs):
    """Connect, optionally send, and return (code, reason) of the server's close frame."""
    async with websockets.connect(url, open_timeout=5, **kwargs) as ws:
        if send is not None:
            await ws.send(send)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        except ConnectionClosed as closed:
            return closed.rcvd.code, closed.rcvd.reason


async def first_json(url, **kwargs):
    async with websockets.connect(url, open_timeout=5, **kwargs) as ws:
        return json.loads(await asyncio.wait_for(ws.recv(), 5))


def forged(user_id, **changes):
    token = AccessToken()
    token["user_id"] = str(user_id)
    if "lifetime" in changes:
        token.set_exp(lifetime=changes["lifetime"])
    return str(token)


async def test_echo_example_round_trip(live):
    async with websockets.connect(f"{live.ws}/api/t/echo/lobby") as ws:
        await ws.send(json.dumps({"hello": "wörld"}))
        assert json.loads(await ws.recv()) == {"echo": {"hello": "wörld"}}


async def test_demo_echo_endpoint(live):
    async with websockets.connect(f"{live.ws}/api/chat/ws/lobby") as ws:
        await ws.send("[1, 2]")
        assert json.loads(await ws.recv()) == {"echo": [1, 2]}


async def test_private_stream_accepts_a_header_token(live):
    token = live.token("plain")
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(f"{live.ws}/api/t/private", additional_headers=headers) as ws:
        await ws.send('"hi"')
        assert json.loads(await ws.recv()) == {"user": "plain@example.com", "msg": "hi"}


async def test_private_stream_accepts_a_query_token(live):
    token = live.token("plain")
    async with websockets.connect(f"{live.ws}/api/t/private?token={token}") as ws:
        await ws.send('"hi"')
        assert json.loads(await ws.recv())["user"] == "plain@example.com"


async def test_header_token_wins_over_query_token(live):
    header, query = live.token("staff"), live.token("plain")
    data = await first_json(
        f"{live.ws}/api/t/hello/1?token={query}", additional_headers={"Authorization": f"Bearer {header}"}
    )
    assert data["user"] == "staff"


async def test_anonymous_client_is_closed_with_4003(live):
    code, reason = await close_of(f"{live.ws}/api/t/private")
    assert code == 4003
    assert reason == "Authentication required"


REFUSED_TOKENS = [
    pytest.param(lambda ids: forged(ids["plain"], lifetime=-timedelta(seconds=5)), "token_expired", id="expired"),
    pytest.param(lambda ids: forged(ids["plain"])[:-3] + "abc", "token_not_valid", id="tampered"),
    pytest.param(
        lambda ids: jwt.encode({"user_id": str(ids["staff"]), "token_type": "access", "exp": 9999999999,
                                "jti": "x"}, key=None, algorithm="none"),
        "token_not_valid",
        id="alg-none",
    ),
    pytest.param(
        lambda ids: jwt.encode({"user_id": str(ids["staff"]), "token_type": "access", "exp": 9999999999,
                                "jti": "x"}, key="another-secret-key-of-sufficient-length!", algorithm="HS256"),
        "token_not_valid",
        id="wrong-key",
    ),
    pytest.param(lambda ids: "not.a.token", "token_not_valid", id="garbage"),
    pytest.param(lambda ids: forged(ids["inactive"]), "user_inactive", id="inactive-user"),
    pytest.param(lambda ids: forged(999999), "user_not_found", id="unknown-user"),
]


@pytest.mark.parametrize(("make_token", "reason_code"), REFUSED_TOKENS)
async def test_refused_credentials_on_a_protected_endpoint_close_with_4003_and_a_reason_code(
    live, make_token, reason_code
):
    code, reason = await close_of(f"{live.ws}/api/t/private?token={make_token(live.users)}")
    assert code == 4003, reason
    assert reason.split(": ")[0] == reason_code, reason


@pytest.mark.parametrize(("make_token", "reason_code"), REFUSED_TOKENS)
async def test_refused_credentials_on_a_public_endpoint_are_served_as_anonymous(live, make_token, reason_code):
    data = await first_json(f"{live.ws}/api/t/hello/1?token={make_token(live.users)}")
    assert data == {"user": None, "params": {"number": 1}}


async def test_inactive_users_token_closes_with_a_clean_reason(live):
    code, reason = await close_of(f"{live.ws}/api/t/private?token={forged(live.users['inactive'])}")
    assert (code, reason) == (4003, "user_inactive: User is inactive")


async def test_refresh_token_is_not_an_access_token(live):
    refresh = live.tokens("plain")["refresh"]
    code, reason = await close_of(f"{live.ws}/api/t/private?token={refresh}")
    assert code == 4003
    assert reason.startswith("token_not_valid: ")


async def test_forged_token_with_the_real_key_is_accepted(live):
    # The counterpart of the refusals above: the same construction, validly signed, works.
    assert settings.SECRET_KEY
    data = await first_json(f"{live.ws}/api/t/hello/7?token={forged(live.users['staff'])}")
    assert data == {"user": "staff", "params": {"number": 7}}


async def test_int_converter_reaches_hooks_converted(live):
    assert (await first_json(f"{live.ws}/api/t/hello/42"))["params"] == {"number": 42}


async def test_path_that_fails_a_converter_is_refused(live):
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(f"{live.ws}/api/t/hello/abc"):
            pass
    assert refused.value.response.status_code == 404  # no route matches: the router's 404


async def test_unknown_path_is_refused_without_a_traceback(live):
    start = len(live.server.log())  # the shared server: other tests log tracebacks on purpose
    with pytest.raises(InvalidStatus):
        async with websockets.connect(f"{live.ws}/api/nowhere"):
            pass
    await alog_line(live.server.log, "WSREJECT /api/nowhere", start)  # the refusal is logged, and nothing before it
    assert "Traceback" not in live.server.log()[start:]


@pytest.mark.parametrize(
    ("path", "user", "allowed"),
    [
        ("admin-only", "staff", True),
        ("admin-only", "plain", False),
        ("admin-only", None, False),
        ("editor-only", "editor", True),
        ("editor-only", "plain", False),
        ("editor-or-admin", "editor", True),
        ("editor-or-admin", "staff", True),
        ("editor-or-admin", "plain", False),
        ("premium", "subscriber", True),
        ("premium", "plain", False),
    ],
)
async def test_permission_classes(live, path, user, allowed):
    query = f"?token={live.token(user)}" if user else ""
    url = f"{live.ws}/api/t/{path}{query}"
    if allowed:
        assert await first_json(url)
    else:
        code, _ = await close_of(url)
        assert code == 4003


async def test_is_owner_compares_the_path_parameter_with_the_user(live):
    token = live.token("plain")
    assert (await first_json(f"{live.ws}/api/t/owner/{live.users['plain']}?token={token}"))["user"] == "plain"
    code, reason = await close_of(f"{live.ws}/api/t/owner/{live.users['owner2']}?token={token}")
    assert (code, reason) == (4003, "You are not the owner")


async def test_malformed_json_closes_1007_and_the_server_keeps_serving(live):
    assert await close_of(f"{live.ws}/api/t/echo/x", send="{oops") == (1007, "Malformed JSON")
    assert (await close_of(f"{live.ws}/api/t/echo/x", send=b"\x00\x01"))[0] == 1003
    async with websockets.connect(f"{live.ws}/api/t/echo/x") as ws:
        await ws.send("1")
        assert json.loads(await ws.recv()) == {"echo": 1}


async def test_spec_push_only_tick_stream(live):
    before = (await quiet_live(live.server))["tick_hub"]
    async with websockets.connect(f"{live.ws}/api/t/ticks/R_50") as subscriber, \
            websockets.connect(f"{live.ws}/api/t/tick-publish") as publisher:
        await await_until(lambda: _tick_hub_is(live, before + 1), interval=0.05, message="the tick hub's subscriber")
        await publisher.send(json.dumps({"symbol": "R_50", "price": 1.5}))
        assert json.loads(await publisher.recv()) == {"published": True}
        assert json.loads(await asyncio.wait_for(subscriber.recv(), 5)) == {"symbol": "R_50", "price": 1.5}


async def _tick_hub_is(live, count):
    return (await stats(live))["tick_hub"] == count


async def test_spec_push_only_override_denies_before_accept(live):
    # The spec's own _handle closes before accept(): daphne answers the handshake with 403.
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(f"{live.ws}/api/t/private-ticks/R_50"):
            pass
    assert refused.value.response.status_code == 403


async def test_spec_trading_tick_stream_over_a_channel(live):
    before = await quiet_subscribers(live.server, "live-ticks")
    async with websockets.connect(f"{live.ws}/api/t/trading/ticks/R_10") as subscriber, \
            websockets.connect(f"{live.ws}/api/t/channel-ticks/OTHER") as publisher:
        await live_subscribers(live.server, "live-ticks", before + 2)  # the publisher's socket subscribes too
        await publisher.send(json.dumps({"symbol": "R_75", "price": 1}))
        await publisher.send(json.dumps({"symbol": "R_10", "price": 2}))
        assert json.loads(await asyncio.wait_for(subscriber.recv(), 5)) == {"symbol": "R_10", "price": 2}


async def test_push_hook_over_a_channel(live):
    before = await quiet_subscribers(live.server, "live-ticks")
    async with websockets.connect(f"{live.ws}/api/t/channel-ticks/R_25") as subscriber:
        await live_subscribers(live.server, "live-ticks", before + 1)
        await subscriber.send(json.dumps({"symbol": "R_25", "price": 3}))
        received = [json.loads(await asyncio.wait_for(subscriber.recv(), 5)) for _ in range(2)]
        assert sorted(received, key=json.dumps) == sorted(
            [{"symbol": "R_25", "price": 3}, {"delivered": 1}], key=json.dumps
        )


async def stats(live):
    return await first_json(f"{live.ws}/api/t/stats")


async def test_a_thousand_live_cycles_leave_no_task_or_subscriber(live):
    before = await stats(live)

    async def cycle(path):
        async with websockets.connect(f"{live.ws}/api/t/{path}") as ws:
            if path.startswith("echo"):
                await ws.send("1")
                await ws.recv()

    paths = ["channel-ticks/A", "trading/ticks/B", "ticks/C", "echo/D"]
    for start in range(0, 1000, 25):
        await asyncio.gather(*(cycle(paths[i % 4]) for i in range(start, start + 25)))
    after = await asettled(lambda: stats(live), lambda now: now == before, 20, 0.1)  # the last ones have closed
    assert after == before
    assert after["tick_channel"] == 0 and after["tick_hub"] == 0
