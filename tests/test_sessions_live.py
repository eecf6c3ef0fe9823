"""Session authentication on real daphne: logged in through Django's own login view (the admin's),
the session cookie makes the socket that user; the cookie from a foreign Origin is refused; no
cookie is anonymous; logging the session out closes its sockets as a revoked token does."""

import asyncio
import json
import re

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.liveapp.management.commands.seed_test_users import PASSWORD
from tests.sse_client import text_until

pytestmark = pytest.mark.timeout(120)


def django_login(server, username="staff"):
    """An httpx client logged in through the admin's login form (CSRF token and all)."""
    http = httpx.Client(base_url=server.url, timeout=10)
    page = http.get("/admin/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
    answer = http.post("/admin/login/?next=/admin/", data={
        "csrfmiddlewaretoken": token, "username": username, "password": PASSWORD, "next": "/admin/",
    })
    assert answer.status_code == 302 and "sessionid" in http.cookies, answer.text[:500]
    return http


def django_logout(http):
    page = http.get("/admin/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
    answer = http.post("/admin/logout/", data={"csrfmiddlewaretoken": token})
    assert answer.status_code == 200, answer.status_code


def cookie_header(http):
    return "; ".join(f"{name}={value}" for name, value in http.cookies.items())


async def connect(server, path, http=None, origin="own", **options):
    headers = {"Cookie": cookie_header(http)} if http is not None else {}
    if origin == "own":
        origin = server.url
    return await websockets.connect(f"{server.ws_url}/api/t14{path}", additional_headers=headers,
                                    origin=origin, open_timeout=10, **options)


async def receive(ws, timeout=10):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def closed_with(ws):
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 10)
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_the_session_cookie_of_a_django_login_makes_the_socket_that_user(live):
    http = django_login(live.server)
    ws = await connect(live.server, "/session/private", http)
    assert await receive(ws) == {"user": live.users["staff"]}
    await ws.close()
    topics = await connect(live.server, "/session/ws", http, subprotocols=["realtime.v1"])
    await topics.send(json.dumps({"op": "subscribe", "ref": "1", "channel": f"owned:{live.users['staff']}"}))
    assert (await receive(topics))["ok"] is True  # IsOwner saw the session's user
    await topics.close()


@pytest.mark.parametrize("origin", ["http://evil.example", None, "null"])
async def test_a_session_cookie_from_a_foreign_or_missing_origin_is_refused_with_1008(live, origin):
    http = django_login(live.server)
    ws = await connect(live.server, "/session/who", http, origin=origin)
    assert await closed_with(ws) == (1008, "Origin not allowed with a session cookie")


async def test_without_the_cookie_a_missing_origin_is_allowed_as_before(live):
    ws = await connect(live.server, "/session/who", origin=None)
    assert await receive(ws) == {"user": None}
    await ws.close()


async def test_no_cookie_is_anonymous_and_a_permission_refuses_it_with_4003(live):
    ws = await connect(live.server, "/session/who")
    assert await receive(ws) == {"user": None}
    await ws.close()
    private = await connect(live.server, "/session/private")
    assert await closed_with(private) == (4003, "Authentication required")


async def test_a_cookie_of_a_session_that_is_gone_is_anonymous(live):
    ws = await websockets.connect(f"{live.server.ws_url}/api/t14/session/who", origin=live.server.url,
                                  additional_headers={"Cookie": "sessionid=" + "0" * 32}, open_timeout=10)
    assert await receive(ws) == {"user": None}
    await ws.close()


async def test_logging_the_session_out_closes_its_sockets_with_4003_session_revoked(live):
    http = django_login(live.server)
    other = django_login(live.server)  # the same user in another browser: its session goes on
    ws = await connect(live.server, "/session/private", http)
    topics = await connect(live.server, "/session/ws", http, subprotocols=["realtime.v1"])
    kept = await connect(live.server, "/session/private", other)
    for socket in (ws, kept):
        assert await receive(socket) == {"user": live.users["staff"]}
    await topics.send(json.dumps({"op": "ping", "ref": "p"}))
    assert (await receive(topics))["ok"] is True
    await asyncio.to_thread(django_logout, http)
    assert await closed_with(ws) == (4003, "session_revoked")
    assert await closed_with(topics) == (4003, "session_revoked")
    await kept.send(json.dumps({"op": "ping"}))  # a plain view: the frame is read, the socket stays open
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(kept.recv(), 1)
    assert kept.state.name == "OPEN"
    await kept.close()
    again = await connect(live.server, "/session/private", http)  # the cookie of a logged-out session
    assert await closed_with(again) == (4003, "Authentication required")



async def test_logging_the_session_out_ends_its_sse_streams_with_session_revoked(live):
    http = django_login(live.server)
    headers = {"Cookie": cookie_header(http)}
    async with httpx.AsyncClient(base_url=live.server.url, timeout=10) as client:
        async with client.stream("GET", "/api/t/sse/forever", headers=headers) as response:
            assert response.status_code == 200
            chunks = response.aiter_text()
            assert "data: staff" in await text_until(chunks, "data: staff")
            await asyncio.to_thread(django_logout, http)
            text = await text_until(chunks, "session_revoked")
    assert "event: error" in text


async def test_a_session_topic_socket_takes_a_token_of_its_user_only(live):
    http = django_login(live.server)
    for username, ok in (("plain", False), ("staff", True)):  # connect may be sent once: a socket each
        topics = await connect(live.server, "/session/ws", http, subprotocols=["realtime.v1"])
        await topics.send(json.dumps({"op": "connect", "ref": "1", "token": live.token(username)}))
        answer = await receive(topics)
        if ok:
            assert answer["ok"] and answer["data"]["user"] == live.users["staff"], answer
        else:
            assert answer["error"]["code"] == "user_mismatch", answer
        await topics.close()
