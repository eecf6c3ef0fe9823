"""The fallback binding of protocol v1 (SSE down, POST up) on a real daphne: a session bound to the
user who opened it, forged and foreign POSTs refused, and no session outliving its stream."""

import asyncio
import json

import httpx
import pytest
import websockets

from tests.sse_client import SSE
from tests.waiting import asettled, await_until

pytestmark = pytest.mark.timeout(120)
FALLBACK = "/api/t14/ws/fallback"
LIMITED = "/api/t14/limited/fallback"


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


async def opened(live, path=FALLBACK, token=None):
    """An open fallback stream and its session id (the stream's first event)."""
    stream = SSE(f"{live.url}{path}", bearer(token) if token else {})
    await stream.__aenter__()
    assert stream.response.status_code == 200
    first = await stream.next()
    assert first["event"] == "session" and first["data"]["v"] == 1
    return stream, first["data"]["session"]


async def post(live, session, frames, token=None, path=FALLBACK):
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(
            f"{live.url}{path}", content=json.dumps(frames),
            headers={"X-Realtime-Session": session, **(bearer(token) if token else {})},
        )


async def stats(live):
    async with websockets.connect(f"{live.ws}/api/t/stats") as ws:
        return json.loads(await ws.recv())


async def frame(stream, op="reply"):
    """The next frame of ``op`` down the stream, skipping others."""
    while True:
        event = await stream.next()
        if event.get("event", "message") == "message" and event["data"]["op"] == op:
            return event["data"]


async def test_a_session_speaks_v1_bound_to_its_user(live):
    token = live.token("plain")
    stream, session = await opened(live, token=token)
    try:
        answer = await post(live, session, [{"op": "connect", "ref": "c", "token": token}], token)
        assert answer.status_code == 202
        connected = await frame(stream)
        assert connected["ref"] == "c" and connected["ok"] and connected["data"]["user"] == live.users["plain"]
        answer = await post(live, session, [
            {"op": "subscribe", "ref": "s", "channel": "lobby:fb"},
            {"op": "publish", "ref": "p", "channel": "lobby:fb", "data": "hi"},
            {"op": "presence", "ref": "m", "channel": "lobby:fb"},
        ], token)
        assert answer.status_code == 202
        assert (await frame(stream))["ref"] == "s"
        seen = {}
        # The message follows its reply; the presence reply may come before it.
        while not {"p", "message", "m"} <= seen.keys():
            event = (await stream.next())["data"]
            seen.setdefault(event.get("ref") or event["op"], event)
        published, message, members = seen["p"], seen["message"], seen["m"]
        assert published["ok"] and message["id"] == published["data"]["id"]
        assert message["data"] == {"from": "plain", "said": "hi"}
        assert [m["id"] for m in members["data"]["members"]] == [live.users["plain"]]
        # Another user's token, no token, a refused token: the session is not theirs.
        other = await post(live, session, [{"op": "ping", "ref": "x"}], live.token("staff"))
        assert other.status_code == 403 and other.json()["code"] == "session_mismatch"
        anonymous = await post(live, session, [{"op": "ping", "ref": "x"}])
        assert anonymous.status_code == 403 and anonymous.json()["code"] == "session_mismatch"
        refused = await post(live, session, [{"op": "ping", "ref": "x"}], "x.y.z")
        assert refused.status_code == 401
        # None of them reached the socket: the next reply is the owner's.
        assert (await post(live, session, [{"op": "ping", "ref": "mine"}], token)).status_code == 202
        assert (await frame(stream))["ref"] == "mine"
    finally:
        await stream.__aexit__(None, None, None)


async def test_a_forged_or_malformed_post_is_refused(live):
    stream, session = await opened(live)
    try:
        forged_id = session[:-2] + ("AA" if not session.endswith("AA") else "BB")
        forged = await post(live, forged_id, [{"op": "ping", "ref": "1"}])
        assert forged.status_code == 404 and forged.json()["code"] == "unknown_session"
        assert (await post(live, "", [{"op": "ping", "ref": "1"}])).status_code == 404
        for body in ({"op": "ping", "ref": "1"}, [], [{"op": "ping", "ref": str(i)} for i in range(33)]):
            assert (await post(live, session, body)).status_code == 400
        async with httpx.AsyncClient(timeout=10) as client:
            big = await client.post(f"{live.url}{FALLBACK}", headers={"X-Realtime-Session": session},
                                    content=json.dumps([{"op": "ping", "ref": "1", "pad": "x" * 1_100_000}]))
        assert big.status_code == 413 and big.json()["code"] == "message_too_big"
        async with httpx.AsyncClient(timeout=10) as client:
            foreign = await client.post(f"{live.url}{FALLBACK}", content=b'[{"op": "ping", "ref": "1"}]',
                                        headers={"X-Realtime-Session": session, "Origin": "https://evil.example"})
            assert foreign.status_code == 403 and foreign.json()["code"] == "origin_not_allowed"
            opened_elsewhere = await client.get(f"{live.url}{FALLBACK}", headers={"Origin": "https://evil.example"})
            assert opened_elsewhere.status_code == 403
        # The protocol's own refusals come down the stream, as on a WebSocket.
        assert (await post(live, session, [{"op": "teleport", "ref": "t"}])).status_code == 202
        refusal = await frame(stream)
        assert refusal["ref"] == "t" and refusal["error"]["code"] == "unknown_op"
    finally:
        await stream.__aexit__(None, None, None)


async def test_no_session_outlives_its_stream(live):
    base = await asettled(lambda: stats(live), lambda now: now["fallback_sessions"] == 0, 10, 0.1)
    token = live.token("subscriber")
    watcher_token = live.token("plain")
    watcher, watching = await opened(live, token=watcher_token)
    stream, session = await opened(live, token=token)
    try:
        await post(live, watching, [{"op": "subscribe", "ref": "w", "channel": "lobby:gone"}], watcher_token)
        assert (await frame(watcher))["ok"]
        await post(live, session, [{"op": "subscribe", "ref": "s", "channel": "lobby:gone"}], token)
        assert (await frame(stream))["ok"]
        while (await frame(watcher, "join"))["member"]["id"] != live.users["subscriber"]:
            pass  # the watcher's own join first
        await stream.__aexit__(None, None, None)  # the client goes away
        left = await frame(watcher, "leave")
        assert left["member"]["id"] == live.users["subscriber"]

        async def gone():
            answer = await post(live, session, [{"op": "ping", "ref": "1"}], token)
            return answer.status_code == 404 and answer.json()["code"] == "unknown_session"

        await await_until(gone, message="the session ended with its stream")
    finally:
        await watcher.__aexit__(None, None, None)
    after = await asettled(lambda: stats(live), lambda now: now["fallback_sessions"] == 0, 10, 0.1)
    assert after["fallback_sessions"] == 0
    assert after["open_connections"] <= base["open_connections"]
    done = await asettled(lambda: stats(live), lambda now: now["tasks"] <= base["tasks"], 10, 0.1)
    assert done["tasks"] <= base["tasks"]


async def test_the_rate_limit_is_the_sockets_and_closes_the_session(live):
    stream, session = await opened(live, LIMITED)
    try:
        answers = [await post(live, session, [{"op": "ping", "ref": str(i)}], path=LIMITED) for i in range(12)]
        assert 429 in [a.status_code for a in answers]
        codes = []
        while True:
            event = await stream.next()
            if event.get("event") == "close":
                break
            codes.append(event["data"].get("error", {}).get("code"))
        assert "rate_limited" in codes and event["data"]["code"] == 1008
        assert (await post(live, session, [{"op": "ping", "ref": "z"}], path=LIMITED)).status_code == 404
    finally:
        await stream.__aexit__(None, None, None)


async def test_streams_count_under_the_websockets_per_user_cap(live):
    token = live.token("owner2")
    streams = []
    try:
        for _ in range(50):  # REALTIME["MAX_CONNECTIONS_PER_USER"]
            streams.append((await opened(live, token=token))[0])
        async with httpx.AsyncClient(timeout=10) as client:
            over = await client.get(f"{live.url}{FALLBACK}", headers=bearer(token))
            assert over.status_code == 429 and "too_many_streams" in over.text
        async with websockets.connect(f"{live.ws}/api/t14/ws?token={token}", subprotocols=["realtime.v1"]) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd.code == 1008  # the same cap: fallback streams and sockets together
        await streams.pop().__aexit__(None, None, None)

        async def room_again():
            async with httpx.AsyncClient(timeout=10) as client, client.stream(
                "GET", f"{live.url}{FALLBACK}", headers=bearer(token)
            ) as response:
                return response.status_code == 200

        await await_until(room_again, message="a place under the cap once a stream closed")
    finally:
        for stream in streams:
            await stream.__aexit__(None, None, None)


async def test_an_expired_token_closes_the_session_unless_refreshed(live):
    from datetime import timedelta

    from tests.test_websocket_live import forged

    short = forged(live.users["plain"], lifetime=timedelta(seconds=2))
    stream, session = await opened(live, token=short)
    try:
        while True:
            event = await stream.next(timeout=8)
            if event.get("event") == "close":
                break
        assert event["data"]["code"] == 4003 and event["data"]["reason"].startswith("token_expired: ")
        assert (await post(live, session, [{"op": "ping", "ref": "1"}], live.token("plain"))).status_code == 404
    finally:
        await stream.__aexit__(None, None, None)
    # A refresh over POST renews it, as on a WebSocket.
    short = forged(live.users["plain"], lifetime=timedelta(seconds=2))
    stream, session = await opened(live, token=short)
    try:
        fresh = live.token("plain")
        assert (await post(live, session, [{"op": "refresh", "ref": "r", "token": fresh}], short)).status_code == 202
        assert (await frame(stream))["ok"]
        with pytest.raises(TimeoutError):
            while True:  # past the short token's expiry: nothing closes it
                event = await stream.next(timeout=3)
                assert event.get("event") != "close", event
        assert (await post(live, session, [{"op": "ping", "ref": "p"}], fresh)).status_code == 202
        assert (await frame(stream))["ref"] == "p"
    finally:
        await stream.__aexit__(None, None, None)
