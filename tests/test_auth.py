"""Refused credentials: the specification's 4003 with a reason by default, 4001 under STRICT_TOKENS,
anonymous on public endpoints; tokens expiring on open connections; revoke_user."""

import asyncio
import json
from datetime import timedelta

import jwt
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import AsyncRequestFactory, override_settings
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

import realtime
from realtime import IsAuthenticated, SSEView, WebSocketView
from realtime.auth import AuthenticationFailed, TokenAuthenticator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

STRICT = override_settings(REALTIME={"STRICT_TOKENS": True})


class Public(WebSocketView):
    keepalive = 0

    async def on_connect(self, ws, **params):
        await ws.send_json({"user": getattr(self.user, "username", None)})


class Protected(Public):
    permission_classes = [IsAuthenticated]

    async def on_receive(self, ws, data):
        await ws.send_json({"echo": data})


@pytest.fixture
def users(db):
    active = User.objects.create_user("ana", password="pw-123456")
    other = User.objects.create_user("bob", password="pw-123456")
    inactive = User.objects.create_user("old", password="pw-123456", is_active=False)
    return {"ana": active, "bob": other, "old": inactive}


def token_for(user_id, lifetime=None):
    token = AccessToken()
    token["user_id"] = str(user_id)
    if lifetime is not None:
        token.set_exp(lifetime=lifetime)
    return str(token)


def claims(user_id):
    return {"user_id": str(user_id), "token_type": "access", "exp": 9999999999, "jti": "x"}


def refresh_token_for(user_id):
    """A valid refresh token, made without the blacklist's OutstandingToken row (tests run async)."""
    token = RefreshToken()
    token["user_id"] = str(user_id)
    return str(token)


# (id, token maker, the reason's code)
REFUSED = [
    ("expired", lambda u: token_for(u["ana"].pk, -timedelta(seconds=5)), "token_expired"),
    ("tampered", lambda u: token_for(u["ana"].pk)[:-3] + "abc", "token_not_valid"),
    ("alg-none", lambda u: jwt.encode(claims(u["ana"].pk), key=None, algorithm="none"), "token_not_valid"),
    ("wrong-key", lambda u: jwt.encode(claims(u["ana"].pk), key="another-secret-key-of-sufficient-length!",
                                       algorithm="HS256"), "token_not_valid"),
    ("garbage", lambda u: "not.a.token", "token_not_valid"),
    ("refresh-token", lambda u: refresh_token_for(u["ana"].pk), "token_not_valid"),
    ("inactive-user", lambda u: token_for(u["old"].pk), "user_inactive"),
    ("unknown-user", lambda u: token_for(999999), "user_not_found"),
]


async def connect(view, token=None, headers=None):
    path = f"/ws?token={token}" if token else "/ws"
    communicator = WebsocketCommunicator(view.as_asgi(), path, headers=headers or [])
    accepted, _ = await communicator.connect()
    assert accepted  # refusals are accepted then closed, so the client sees the code
    return communicator


async def close_of(communicator, timeout=3):
    message = await communicator.receive_output(timeout)
    assert message["type"] == "websocket.close", message
    return message["code"], message["reason"]


@pytest.mark.parametrize(("make", "code"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
async def test_refused_token_on_a_protected_endpoint_closes_4003_with_the_reason_code(users, make, code):
    communicator = await connect(Protected, make(users))
    closed_code, reason = await close_of(communicator)
    assert closed_code == 4003
    assert reason.split(":")[0] == code, reason
    assert len(reason.encode()) <= 123


@pytest.mark.parametrize(("make", "code"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
async def test_refused_token_on_a_public_endpoint_is_served_as_anonymous(users, make, code):
    communicator = await connect(Public, make(users))
    assert await communicator.receive_json_from() == {"user": None}
    await communicator.disconnect()


@STRICT
@pytest.mark.parametrize(("make", "code"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
@pytest.mark.parametrize("view", [Public, Protected], ids=["public", "protected"])
async def test_strict_tokens_close_4001_on_every_endpoint(users, view, make, code):
    closed_code, reason = await close_of(await connect(view, make(users)))
    assert (closed_code, reason.split(":")[0]) == (4001, code)


async def test_inactive_user_gets_a_clean_code_and_text(users):
    closed = await close_of(await connect(Protected, token_for(users["old"].pk)))
    assert closed == (4003, "user_inactive: User is inactive")
    authenticator = TokenAuthenticator()
    with pytest.raises(AuthenticationFailed) as refused:
        await sync_to_async(authenticator.get_user)(authenticator.get_validated_token(token_for(users["old"].pk)))
    assert (refused.value.code, refused.value.detail) == ("user_inactive", "User is inactive")


async def test_expired_token_reason_is_token_expired_and_says_so():
    with pytest.raises(AuthenticationFailed) as refused:
        TokenAuthenticator().get_validated_token(token_for(1, -timedelta(seconds=1)))
    assert (refused.value.code, refused.value.detail) == ("token_expired", "Token is expired")
    assert refused.value.close_reason() == "token_expired: Token is expired"


def test_close_reason_is_cut_to_123_bytes_on_a_character_boundary():
    reason = AuthenticationFailed("é" * 200, "token_not_valid").close_reason()
    assert reason.startswith("token_not_valid: é") and len(reason.encode()) <= 123
    reason.encode().decode()  # whole characters only


async def test_no_token_on_a_protected_endpoint_keeps_the_permission_message(users):
    assert await close_of(await connect(Protected)) == (4003, "Authentication required")


async def test_valid_token_is_served(users):
    header = f"Bearer {token_for(users['ana'].pk)}".encode()
    communicator = await connect(Protected, headers=[(b"authorization", header)])
    assert await communicator.receive_json_from() == {"user": "ana"}
    await communicator.disconnect()


# (id, Authorization header, the reason)
WRONG_HEADERS = [
    ("drf-token-scheme", lambda t: f"Token {t}", 'Send "Authorization: Bearer <token>", not "Token <token>"'),
    ("jwt-scheme", lambda t: f"JWT {t}", 'Send "Authorization: Bearer <token>", not "JWT <token>"'),
    ("bare-token", lambda t: t, 'Send "Authorization: Bearer <token>", not the bare token'),
]


@pytest.mark.parametrize(("header", "detail"), [r[1:] for r in WRONG_HEADERS], ids=[r[0] for r in WRONG_HEADERS])
async def test_a_token_in_the_wrong_header_form_is_refused_with_the_header_to_send(users, header, detail):
    value = header(token_for(users["ana"].pk)).encode()
    closed = await close_of(await connect(Protected, headers=[(b"authorization", value)]))
    assert closed == (4003, f"bad_authorization_header: {detail}")
    public = await connect(Public, headers=[(b"authorization", value)])  # a public endpoint: anonymous, as before
    assert await public.receive_json_from() == {"user": None}
    await public.disconnect()
    with STRICT:
        assert await close_of(await connect(Public, headers=[(b"authorization", value)])) == (
            4001, f"bad_authorization_header: {detail}")

    request = AsyncRequestFactory().get("/events", headers={"Authorization": value.decode()})
    response = await ProtectedEvents.as_view()(request)
    assert response.status_code == 401 and response["WWW-Authenticate"] == 'Bearer realm="api"'
    body = json.dumps({"code": "bad_authorization_header", "detail": detail}, separators=(",", ":"))
    assert response.content.decode() == f"event: error\ndata: {body}\n\n"


@pytest.mark.parametrize(
    ("header", "query", "found"),
    [
        ("Basic dXNlcjpwYXNz", {}, None),  # another scheme, no JWT in it: left to others, as simplejwt does
        ("Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b", {}, None),  # DRF's own tokens are not JWTs
        ("Token aaa.bbb.ccc", {"token": "from.the.query"}, "from.the.query"),  # ?token= comes with it: used
        ("Bearer aaa.bbb.ccc", {}, "aaa.bbb.ccc"),
    ],
)
def test_other_authorization_headers_are_left_alone(header, query, found):
    assert TokenAuthenticator().get_raw_token({"authorization": header}, query) == found


# -- open connections: expiry, in-band refresh, revocation -----------------------------------------


@pytest.mark.parametrize(("strict", "code"), [(False, 4003), (True, 4001)], ids=["default", "strict"])
async def test_token_expiring_on_an_open_connection_closes_with_token_expired(users, strict, code):
    with override_settings(REALTIME={"STRICT_TOKENS": strict}):
        communicator = await connect(Protected, token_for(users["ana"].pk, timedelta(seconds=1)))
        assert await communicator.receive_json_from() == {"user": "ana"}
        closed_code, reason = await close_of(communicator, timeout=4)
    assert closed_code == code and reason.startswith("token_expired: ")


@pytest.mark.parametrize(("strict", "code"), [(False, 4003), (True, 4001)], ids=["default", "strict"])
async def test_failed_in_band_refresh_closes_with_the_refusal(users, strict, code):
    with override_settings(REALTIME={"STRICT_TOKENS": strict}):
        communicator = await connect(Protected, token_for(users["ana"].pk))
        await communicator.receive_json_from()
        await communicator.send_json_to({"type": "realtime.refresh", "token": "not.a.token"})
        assert await close_of(communicator) == (code, "token_not_valid: Token is invalid")

        communicator = await connect(Protected, token_for(users["ana"].pk))
        await communicator.receive_json_from()
        await communicator.send_json_to({"type": "realtime.refresh", "token": token_for(users["bob"].pk)})
        closed_code, reason = await close_of(communicator)
    assert (closed_code, reason.split(":")[0]) == (code, "user_mismatch")


async def test_in_band_refresh_with_a_fresh_token_of_the_same_user_keeps_the_connection(users):
    communicator = await connect(Protected, token_for(users["ana"].pk, timedelta(seconds=1)))
    await communicator.receive_json_from()
    await communicator.send_json_to({"type": "realtime.refresh", "token": token_for(users["ana"].pk)})
    assert (await communicator.receive_json_from())["ok"] is True
    await asyncio.sleep(1.5)  # time under test: past the first token's 1 s lifetime
    await communicator.send_json_to("still here")
    assert await communicator.receive_json_from() == {"echo": "still here"}
    await communicator.disconnect()


async def test_queryset_update_closes_nothing_and_revoke_user_closes_the_users_sockets(users):
    ana = await connect(Protected, token_for(users["ana"].pk))
    bob = await connect(Protected, token_for(users["bob"].pk))
    assert await ana.receive_json_from() == {"user": "ana"}
    assert await bob.receive_json_from() == {"user": "bob"}

    await User.objects.filter(pk=users["ana"].pk).aupdate(is_active=False)  # no post_save: no revocation
    assert await ana.receive_nothing(0.3)

    await asyncio.to_thread(realtime.revoke_user, users["ana"].pk)  # sync code, e.g. a management command
    assert await close_of(ana) == (4003, "session_revoked")
    await bob.send_json_to("still connected")  # another user's connection is untouched
    assert await bob.receive_json_from() == {"echo": "still connected"}
    await realtime.arevoke_user(users["bob"].pk)
    assert await close_of(bob) == (4003, "session_revoked")


async def test_a_revocation_that_arrives_late_spares_the_connections_opened_after_it(users):
    """Log out, log in again at once: the logout reaching a process late must not close the new login."""
    from realtime.revocation import _revocation, revocations

    before = await connect(Protected, token_for(users["ana"].pk))
    await before.receive_json_from()
    logout = _revocation(users["ana"].pk, "logout")  # made now, delivered below
    await asyncio.sleep(0.01)  # time under test: the clock moves on, so the next login opens after the logout
    after = await connect(Protected, token_for(users["ana"].pk))
    await after.receive_json_from()
    await revocations.channel.publish(logout)
    assert await close_of(before) == (4003, "session_revoked")
    await after.send_json_to("still connected")
    assert await after.receive_json_from() == {"echo": "still connected"}
    await after.disconnect()


@STRICT
async def test_revocation_closes_4001_under_strict_tokens(users):
    ana = await connect(Protected, token_for(users["ana"].pk))
    await ana.receive_json_from()
    await realtime.arevoke_user(users["ana"].pk)
    assert await close_of(ana) == (4001, "session_revoked")


async def test_revoke_user_from_async_code_points_to_arevoke_user():
    with pytest.raises(RuntimeError, match=r"await realtime\.arevoke_user"):
        realtime.revoke_user(1)


async def test_saving_an_inactive_user_revokes_through_post_save(users):
    ana = await connect(Protected, token_for(users["ana"].pk))
    await ana.receive_json_from()
    user = users["ana"]
    user.is_active = False
    await user.asave()
    assert await close_of(ana) == (4003, "session_revoked")


# -- SSE --------------------------------------------------------------------------------------------


class PublicEvents(SSEView):
    ping_interval = 0

    async def stream(self, request, **params):
        yield {"event": "hello", "data": {"user": getattr(self.user, "username", None)}}


class ProtectedEvents(PublicEvents):
    permission_classes = [IsAuthenticated]


async def sse(view, token):
    request = AsyncRequestFactory().get("/events", {"token": token} if token else {})
    response = await view.as_view()(request)
    body = b"".join([chunk async for chunk in response.streaming_content]) if response.streaming else response.content
    return response.status_code, body.decode()


async def test_sse_public_endpoint_with_a_stale_token_serves_anonymous(users):
    status, body = await sse(PublicEvents, token_for(users["ana"].pk, -timedelta(seconds=5)))
    assert status == 200
    assert 'event: hello\ndata: {"user":null}' in body


async def test_sse_protected_endpoint_with_a_stale_token_answers_401_with_the_code(users):
    status, body = await sse(ProtectedEvents, token_for(users["ana"].pk, -timedelta(seconds=5)))
    assert status == 401
    assert body == 'event: error\ndata: {"code":"token_expired","detail":"Token is expired"}\n\n'
    status, body = await sse(ProtectedEvents, token_for(users["old"].pk))
    assert (status, body) == (401, 'event: error\ndata: {"code":"user_inactive","detail":"User is inactive"}\n\n')
    status, _ = await sse(ProtectedEvents, token_for(users["ana"].pk))
    assert status == 200


@STRICT
async def test_sse_strict_tokens_answer_401_on_a_public_endpoint(users):
    status, body = await sse(PublicEvents, token_for(users["ana"].pk, -timedelta(seconds=5)))
    assert status == 401 and '"code":"token_expired"' in body
