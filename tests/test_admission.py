"""realtime.admission: one admission (credentials, permissions, caps) and what an admitted connection
holds, from tables, on its own and through each edge (WebSocketView, SSEView, TopicSocket)."""

import asyncio
from datetime import timedelta

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import AsyncRequestFactory, override_settings
from rest_framework_simplejwt.tokens import AccessToken

import realtime
from realtime import Channel, IsAdmin, IsAuthenticated, SSEView, WebSocketView
from realtime.admission import EXPIRED, REVOKED, TOO_MANY, Admitted, Denied, admit, sse_caps, websocket_caps
from realtime.auth import AuthenticationFailed
from realtime.connection import WebSocket
from realtime.revocation import revocations
from realtime.security import ConnectionCounter, sse_users, websocket_addresses, websocket_users
from tests.topicsapp.routing import Sockets
from tests.waiting import await_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

BEARER = {"WWW-Authenticate": 'Bearer realm="api"'}


@pytest.fixture
def users(db):
    return {
        "ana": User.objects.create_user("ana", password="pw-123456"),
        "old": User.objects.create_user("old", password="pw-123456", is_active=False),
    }


def token_for(user, lifetime=None):
    token = AccessToken()
    token["user_id"] = str(user.pk)
    if lifetime is not None:
        token.set_exp(lifetime=lifetime)
    return str(token)


# -- the admission on its own ---------------------------------------------------------------------


class FakeUser:
    is_authenticated = True

    def __init__(self, pk):
        self.pk = pk


class Deny:
    message = "No entry"
    code = "no_entry"

    async def has_permission(self, request, view=None):
        return False


class FakeView:
    permission_classes = []


class FakeRequest:
    user = "unset"


async def found(result):
    if isinstance(result, Exception):
        raise result
    return result


REFUSED = AuthenticationFailed("Token is expired", "token_expired")
ANA = FakeUser(7)
TOKEN = {"exp": 9999999999}

# (id, credentials, permissions, strict, Denied's fields or None for admitted)
ADMISSIONS = [
    ("anonymous-public", None, [], False, None),
    ("user-public", (ANA, TOKEN), [], False, None),
    ("refused-token-public", REFUSED, [], False, None),
    ("no-token-protected", None, [IsAuthenticated], False,
     (4003, "Authentication required", 401, "not_authenticated", "Authentication required", None)),
    ("refused-token-protected", REFUSED, [IsAuthenticated], False,
     (4003, "token_expired: Token is expired", 401, "token_expired", "Token is expired", BEARER)),
    ("strict-refused-token-public", REFUSED, [], True,
     (4001, "token_expired: Token is expired", 401, "token_expired", "Token is expired", BEARER)),
    ("permission-denied", (ANA, TOKEN), [Deny], False, (4003, "No entry", 403, "no_entry", "No entry", None)),
    ("permission-denied-anonymous", None, [Deny], False, (4003, "No entry", 401, "no_entry", "No entry", None)),
]


@pytest.mark.parametrize(("credentials", "permissions", "strict", "expected"), [a[1:] for a in ADMISSIONS],
                         ids=[a[0] for a in ADMISSIONS])
async def test_admit_runs_credentials_then_permissions(credentials, permissions, strict, expected):
    view, request = FakeView(), FakeRequest()
    view.permission_classes = permissions
    with override_settings(REALTIME={"STRICT_TOKENS": strict}):
        result = await admit(view, request, found(credentials), lambda user: [])
    if expected is None:
        assert isinstance(result, Admitted)
        user = credentials[0] if isinstance(credentials, tuple) else None
        assert (view.user, request.user) == (user, user)
        assert view.auth_error is (credentials if isinstance(credentials, Exception) else None)
    else:
        assert result == Denied(*expected)


async def test_a_refused_token_is_kept_and_the_anonymous_user_stands_in_on_the_request():
    view, request = FakeView(), FakeRequest()
    result = await admit(view, request, found(REFUSED), lambda user: [], anonymous=lambda: "anonymous")
    assert isinstance(result, Admitted)
    assert (view.user, view.auth_token, view.auth_error, request.user) == (None, None, REFUSED, "anonymous")


async def test_admit_denies_over_a_cap_and_keeps_nothing_counted():
    first, second = ConnectionCounter(), ConnectionCounter()
    caps = [(first, "a", 5), (second, "b", 0)]  # the second is full: the first's place is given back
    result = await admit(FakeView(), FakeRequest(), found(None), lambda user: caps)
    assert result is TOO_MANY
    assert (result.close_code, result.reason) == (1008, "Too many connections")
    assert (result.http_status, result.error_code) == (429, "too_many_streams")
    assert first.counts == {} and second.counts == {}


async def test_release_frees_caps_revocation_entry_and_expiry_timer():
    counter = ConnectionCounter()
    ended = []
    admitted = Admitted(ANA, {"exp": 9999999999})
    assert admitted.take([(counter, ANA.pk, None)])
    admitted.hold(ended.append)
    assert counter.counts == {ANA.pk: 1} and "7" in revocations.closers
    assert admitted.holds_anything
    admitted.release()
    admitted.release()  # a second call does nothing
    assert counter.counts == {} and "7" not in revocations.closers
    assert not admitted.holds_anything
    admitted._ended(REVOKED)  # a revocation that was on its way when the connection ended
    assert ended == []


async def test_an_admitted_connection_ends_on_revocation_and_on_expiry():
    ended, both = [], asyncio.Event()

    def end(code):
        ended.append(code)
        if len(ended) == 2:
            both.set()

    admitted = Admitted(ANA, {"exp": 0})  # already past: the timer fires at once
    admitted.hold(end)
    revocations.on_revocation({"action": "revoke", "user": "7"}, None)
    await asyncio.wait_for(both.wait(), 3)
    assert sorted(ended) == sorted([REVOKED, EXPIRED])
    admitted.release()


async def test_sign_in_counts_the_user_and_renew_moves_the_expiry():
    ended = []
    admitted = Admitted()
    admitted.hold(ended.append)
    assert not admitted.holds_anything  # anonymous and without a token: nothing to hold
    counter = ConnectionCounter()
    assert not admitted.sign_in(ANA, TOKEN, [(counter, ANA.pk, 0)])
    assert "7" not in revocations.closers
    assert admitted.sign_in(ANA, {"exp": 0}, [(counter, ANA.pk, 1)])
    assert counter.counts == {7: 1} and "7" in revocations.closers
    expiring = admitted._expiry
    admitted.renew(TOKEN)  # before the old expiry's timer ran
    assert expiring.cancelled() and admitted._expiry.when() > asyncio.get_running_loop().time() + 3600
    admitted.release()
    assert ended == []
    assert counter.counts == {} and "7" not in revocations.closers


@override_settings(REALTIME={})
def test_caps_per_transport():
    assert websocket_caps(None, {}) == []
    assert websocket_caps(None, {"client": ("10.0.0.1", 5)}) == [(websocket_addresses, "10.0.0.1", 200)]
    assert websocket_caps(ANA, {"client": ("10.0.0.1", 5)}) == [
        (websocket_users, 7, 50), (websocket_addresses, "10.0.0.1", 200)]
    assert sse_caps(None) == [] and sse_caps(ANA) == [(sse_users, 7, 20)]


# -- WebSocketView: each denial's close code and reason ---------------------------------------------


class Public(WebSocketView):
    keepalive = 0

    async def on_connect(self, ws, **params):
        await ws.send_json({"user": getattr(ws.user, "username", None)})


class Protected(Public):
    permission_classes = [IsAuthenticated]


class AdminsOnly(Public):
    permission_classes = [IsAdmin]


async def open_socket(view, token=None, client=("10.1.1.1", 1000)):
    communicator = WebsocketCommunicator(view.as_asgi(), f"/ws?token={token}" if token else "/ws")
    communicator.scope["client"] = client
    accepted, _ = await communicator.connect()
    assert accepted  # refusals are accepted, then closed: the client sees the code
    return communicator


async def closed_with(communicator):
    message = await communicator.receive_output(3)
    assert message["type"] == "websocket.close", message
    await communicator.wait()
    return message["code"], message["reason"]


# (id, view, token maker, REALTIME settings, (code, reason))
WEBSOCKET_DENIALS = [
    ("no-token", Protected, None, {}, (4003, "Authentication required")),
    ("bad-token", Protected, lambda u: "not.a.token", {}, (4003, "token_not_valid: Token is invalid")),
    ("expired", Protected, lambda u: token_for(u["ana"], -timedelta(seconds=5)), {},
     (4003, "token_expired: Token is expired")),
    ("inactive", Protected, lambda u: token_for(u["old"]), {}, (4003, "user_inactive: User is inactive")),
    ("strict-bad-token", Public, lambda u: "not.a.token", {"STRICT_TOKENS": True},
     (4001, "token_not_valid: Token is invalid")),
    ("strict-expired", Public, lambda u: token_for(u["ana"], -timedelta(seconds=5)), {"STRICT_TOKENS": True},
     (4001, "token_expired: Token is expired")),
    ("permission-denied", AdminsOnly, lambda u: token_for(u["ana"]), {}, (4003, "Administrator access required")),
    ("user-cap", Public, lambda u: token_for(u["ana"]), {"MAX_CONNECTIONS_PER_USER": 0},
     (1008, "Too many connections")),
    ("address-cap", Public, None, {"MAX_CONNECTIONS_PER_IP": 0}, (1008, "Too many connections")),
]


@pytest.mark.parametrize(("view", "make", "realtime", "expected"), [d[1:] for d in WEBSOCKET_DENIALS],
                         ids=[d[0] for d in WEBSOCKET_DENIALS])
async def test_websocket_denials_close_with_their_code_and_reason(users, view, make, realtime, expected):
    with override_settings(REALTIME=realtime):
        communicator = await open_socket(view, make(users) if make else None)
        assert await closed_with(communicator) == expected
    assert websocket_users.counts == {} and websocket_addresses.counts == {}


async def test_a_websocket_over_the_cap_is_refused_while_the_others_hold_their_places(users):
    with override_settings(REALTIME={"MAX_CONNECTIONS_PER_USER": 1}):
        first = await open_socket(Public, token_for(users["ana"]))
        assert await first.receive_json_from() == {"user": "ana"}
        assert await closed_with(await open_socket(Public, token_for(users["ana"]))) == (1008, "Too many connections")
        assert websocket_users.counts == {users["ana"].pk: 1}
        await first.disconnect()
    assert websocket_users.counts == {} and websocket_addresses.counts == {}


async def test_a_closed_websocket_leaves_no_cap_and_no_revocation_entry(users):
    sockets = [await open_socket(Public, token_for(users["ana"]), client=("10.2.2.2", n)) for n in range(3)]
    for communicator in sockets:
        assert await communicator.receive_json_from() == {"user": "ana"}
    assert websocket_users.counts == {users["ana"].pk: 3} and websocket_addresses.counts == {"10.2.2.2": 3}
    assert len(revocations.closers.get(str(users["ana"].pk), ())) == 3
    for communicator in sockets:
        await communicator.disconnect()
    assert websocket_users.counts == {} and websocket_addresses.counts == {}
    assert str(users["ana"].pk) not in revocations.closers


async def test_the_user_is_kept_once_on_the_view(users):
    seen = {}

    class Spy(Public):
        async def on_connect(self, ws, **params):
            seen.update(view=self.user, ws=ws.user, token=ws.auth_token is self.auth_token, same=ws.view is self)
            self.user = "changed"
            seen["after"] = ws.user

    communicator = await open_socket(Spy, token_for(users["ana"]))
    await communicator.disconnect()
    assert seen == {"view": users["ana"], "ws": users["ana"], "token": True, "same": True, "after": "changed"}


async def test_every_attribute_of_the_connection_is_set_in_its_init(users):
    """Nothing sets an undeclared attribute on ``ws`` (heartbeats, admission, ops, the relay)."""
    declared = set(vars(WebSocket({"type": "websocket"}, None)))
    kept = []

    class Keep(Public):
        keepalive = 1
        relay = Channel("admission-attributes")

        async def on_connect(self, ws, **params):
            kept.append(ws)

    with override_settings(REALTIME={"METRICS_LATENCY_SAMPLE": 1}):
        communicator = await open_socket(Keep, token_for(users["ana"]))
        await communicator.send_json_to({"type": "realtime.refresh", "token": token_for(users["ana"])})
        assert (await communicator.receive_json_from())["ok"] is True
        await communicator.disconnect()
    refused = await open_socket(Protected)
    await closed_with(refused)
    assert set(vars(kept[0])) <= declared | {"headers", "query_params"}


# -- SSEView: each denial's status, body and headers ------------------------------------------------


class PublicEvents(SSEView):
    ping_interval = 0

    async def stream(self, request, **params):
        yield {"event": "hello", "data": {"user": getattr(self.user, "username", None)}}


class ProtectedEvents(PublicEvents):
    permission_classes = [IsAuthenticated]


class AdminEvents(PublicEvents):
    permission_classes = [IsAdmin]


RELAYED = Channel("admission-relay")


class RelayEvents(SSEView):
    ping_interval = 0
    relay = RELAYED
    permission_classes = [IsAuthenticated]


async def sse_get(view, token=None):
    request = AsyncRequestFactory().get("/events", {"token": token} if token else {})
    return await view.as_view()(request)


async def registered(key):
    while key not in revocations.closers:
        await asyncio.sleep(0)


def error_body(code, detail):
    return f'event: error\ndata: {{"code":"{code}","detail":"{detail}"}}\n\n'.encode()


# (id, view, token maker, REALTIME settings, (status, code, detail, WWW-Authenticate or None))
SSE_DENIALS = [
    ("no-token", ProtectedEvents, None, {}, (401, "not_authenticated", "Authentication required", None)),
    ("bad-token", ProtectedEvents, lambda u: "not.a.token", {},
     (401, "token_not_valid", "Token is invalid", BEARER["WWW-Authenticate"])),
    ("expired", ProtectedEvents, lambda u: token_for(u["ana"], -timedelta(seconds=5)), {},
     (401, "token_expired", "Token is expired", BEARER["WWW-Authenticate"])),
    ("strict-bad-token", PublicEvents, lambda u: "not.a.token", {"STRICT_TOKENS": True},
     (401, "token_not_valid", "Token is invalid", BEARER["WWW-Authenticate"])),
    ("permission-denied", AdminEvents, lambda u: token_for(u["ana"]), {},
     (403, "not_admin", "Administrator access required", None)),
    ("stream-cap", PublicEvents, lambda u: token_for(u["ana"]), {"MAX_SSE_STREAMS_PER_USER": 0},
     (429, "too_many_streams", "Too many concurrent streams for this user", None)),
    ("relay-cap", RelayEvents, lambda u: token_for(u["ana"]), {"MAX_SSE_STREAMS_PER_USER": 0},
     (429, "too_many_streams", "Too many concurrent streams for this user", None)),
    ("relay-no-token", RelayEvents, None, {}, (401, "not_authenticated", "Authentication required", None)),
]


@pytest.mark.parametrize(("view", "make", "realtime", "expected"), [d[1:] for d in SSE_DENIALS],
                         ids=[d[0] for d in SSE_DENIALS])
async def test_sse_denials_answer_their_status_and_error_event(users, view, make, realtime, expected):
    status, code, detail, challenge = expected
    with override_settings(REALTIME=realtime):
        response = await sse_get(view, make(users) if make else None)
    assert not response.streaming
    assert (response.status_code, response.content) == (status, error_body(code, detail))
    assert response.get("WWW-Authenticate") == challenge
    assert response["Content-Type"] == "text/event-stream; charset=utf-8"
    assert sse_users.counts == {}


async def test_a_finished_sse_stream_leaves_no_cap_and_no_revocation_entry(users):
    response = await sse_get(ProtectedEvents, token_for(users["ana"]))
    assert sse_users.counts == {users["ana"].pk: 1}  # taken at admission, before the body starts
    body = b"".join([chunk async for chunk in response.streaming_content])
    assert b'event: hello\ndata: {"user":"ana"}' in body
    assert sse_users.counts == {} and str(users["ana"].pk) not in revocations.closers


async def test_a_relayed_sse_stream_ends_on_revocation_and_leaves_nothing(users):
    response = await sse_get(RelayEvents, token_for(users["ana"]))
    chunks = aiter(response.streaming_content)
    assert await anext(chunks) == b": connected\n\n"
    reading = asyncio.ensure_future(anext(chunks))
    await asyncio.wait_for(registered(str(users["ana"].pk)), 3)  # the body holds its admission
    revocations.on_revocation({"action": "revoke", "user": str(users["ana"].pk)}, None)
    assert await asyncio.wait_for(reading, 3) == error_body("session_revoked", "Reconnect with a fresh token")
    with pytest.raises(StopAsyncIteration):
        await anext(chunks)
    assert sse_users.counts == {} and str(users["ana"].pk) not in revocations.closers


class StaffRelayEvents(RelayEvents):
    permission_classes = [IsAdmin]


async def test_a_relayed_sse_stream_ends_with_the_refusal_when_a_recheck_denies(users):
    staff = await User.objects.acreate(username="relay-staff", is_staff=True)
    response = await sse_get(StaffRelayEvents, token_for(staff))
    chunks = aiter(response.streaming_content)
    assert await anext(chunks) == b": connected\n\n"
    reading = asyncio.ensure_future(anext(chunks))
    await asyncio.wait_for(registered(str(staff.pk)), 3)
    await User.objects.filter(pk=staff.pk).aupdate(is_staff=False)  # no signal: the re-check is asked for
    await realtime.arecheck(staff.pk)
    assert await asyncio.wait_for(reading, 3) == error_body("not_admin", "Administrator access required")
    with pytest.raises(StopAsyncIteration):
        await anext(chunks)
    assert sse_users.counts == {} and str(staff.pk) not in revocations.closers


@pytest.mark.parametrize("view", [ProtectedEvents, RelayEvents], ids=["stream", "relay"])
async def test_a_stream_closed_before_its_body_ran_still_frees_its_cap(users, view):
    """A client gone right after the headers: Django closes the response, whose body never started."""
    response = await sse_get(view, token_for(users["ana"]))
    assert sse_users.counts == {users["ana"].pk: 1}
    chunks = aiter(response.streaming_content)
    assert await anext(chunks) == b": connected\n\n"
    await chunks.aclose()  # the generator is closed at its first yield, as Django does on a disconnect
    response.close()
    assert sse_users.counts == {} and str(users["ana"].pk) not in revocations.closers


# -- TopicSocket: in-band sign-in goes through the same admission -----------------------------------


async def test_a_topic_socket_signed_in_in_band_leaves_nothing_after_close(users):
    communicator = WebsocketCommunicator(Sockets.as_asgi(), "/ws", subprotocols=["realtime.v1"])
    communicator.scope["client"] = ("10.3.3.3", 1)
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"op": "connect", "ref": "c", "token": token_for(users["ana"])})
    assert (await communicator.receive_json_from(timeout=5))["ok"]
    assert websocket_users.counts == {users["ana"].pk: 1}
    assert str(users["ana"].pk) in revocations.closers
    await communicator.disconnect()
    assert websocket_users.counts == {} and websocket_addresses.counts == {}
    assert str(users["ana"].pk) not in revocations.closers


async def test_a_topic_socket_sign_in_over_the_user_cap_closes_1008(users):
    with override_settings(REALTIME={"MAX_CONNECTIONS_PER_USER": 0}):
        communicator = WebsocketCommunicator(Sockets.as_asgi(), "/ws", subprotocols=["realtime.v1"])
        assert (await communicator.connect())[0]
        await communicator.send_json_to({"op": "connect", "ref": "c", "token": token_for(users["ana"])})
        assert await closed_with(communicator) == (1008, "Too many connections")
    assert websocket_users.counts == {} and str(users["ana"].pk) not in revocations.closers


# -- re-checks: the admission's permissions again, on an open connection ------------------------------


async def test_a_recheck_after_is_staff_is_cleared_closes_an_admin_socket_4003_and_leaves_nothing(users):
    staff = await User.objects.acreate(username="staffer", is_staff=True)
    communicator = await open_socket(AdminsOnly, token_for(staff))
    assert await communicator.receive_json_from() == {"user": "staffer"}
    staff.is_staff = False
    await staff.asave()  # post_save: a re-check, at once outside a transaction
    assert await closed_with(communicator) == (4003, "Administrator access required")
    assert websocket_users.counts == {} and str(staff.pk) not in revocations.closers


async def test_a_recheck_that_still_allows_keeps_the_socket_with_the_reloaded_user(users):
    staff = await User.objects.acreate(username="staffer", is_staff=True, first_name="before")
    communicator = await open_socket(AdminsOnly, token_for(staff))
    assert await communicator.receive_json_from() == {"user": "staffer"}
    await User.objects.filter(pk=staff.pk).aupdate(first_name="after")  # no signal
    closers = revocations.closers[str(staff.pk)]
    views = [recheck.__self__._view for _, recheck in closers.values()]
    await realtime.arecheck(staff)
    await await_until(lambda: views[0].user.first_name == "after", message="the view's user reloaded")
    assert await communicator.receive_nothing(0.2)
    await communicator.disconnect()


async def test_recheck_from_async_code_points_to_arecheck():
    with pytest.raises(RuntimeError, match=r"await realtime\.arecheck"):
        realtime.recheck(1)


async def test_the_control_channel_keeps_one_listener_however_often_connections_come_and_go():
    """Each process subscribes once: a revocation or re-check is handled once per connection."""
    for _ in range(3):
        unregister = revocations.register(99, lambda: None)
        assert revocations.channel.subscriber_count == 1
        unregister()
    assert revocations.channel.subscriber_count == 0


async def test_group_changes_from_either_side_and_user_saves_recheck_that_user():
    from asgiref.sync import sync_to_async
    from django.contrib.auth.models import Group

    ana, bob = await User.objects.acreate(username="ana2"), await User.objects.acreate(username="bob2")
    group = await Group.objects.acreate(name="rechecked")
    asked = []
    forget = [revocations.register(user.pk, lambda: None, lambda fresh: asked.append(int(fresh.pk)))
              for user in (ana, bob)]
    try:
        steps = [
            (lambda: ana.groups.add(group), [ana.pk]),
            (lambda: group.user_set.add(bob), [bob.pk]),
            (lambda: group.user_set.remove(bob), [bob.pk]),
            (lambda: group.user_set.add(bob), [bob.pk]),
            (lambda: group.user_set.clear(), sorted([ana.pk, bob.pk])),
            (lambda: ana.groups.add(group), [ana.pk]),
            (lambda: ana.groups.clear(), [ana.pk]),
            (lambda: setattr(ana, "is_staff", True) or ana.save(), [ana.pk]),
            (lambda: ana.save(update_fields=["last_login"]), []),  # every login saves this: no re-check
            (lambda: ana.save(update_fields=["is_staff"]), [ana.pk]),
        ]
        for number, (step, expected) in enumerate(steps):
            asked.clear()
            await sync_to_async(step)()  # returns once the re-check is published (and heard here)
            assert sorted(asked) == expected, f"step {number}"
    finally:
        for unregister in forget:
            unregister()
