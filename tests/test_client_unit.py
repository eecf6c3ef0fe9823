"""realtime.client's connection rules against small scripted servers (websockets, in this process):
request order after a reconnect, 4003 and refused tokens, timeouts, the buffer's drop-oldest, close()."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time

import pytest
from websockets.asyncio.server import serve

from realtime.client import Gap, Message, Realtime, RealtimeError, backoff_delay, token_exp
from tests.waiting import await_until

FAST = (0.005, 0.02)


def fake_token(user: int, exp: float | None = None) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part({'user_id': user, 'exp': exp or time.time() + 3600})}.sig"


class Script:
    """A protocol v1 server whose answers a test decides: ``answer(socket_number, frame)`` returns the
    frames to send (a reply is made for a dict with "data" or "error"), or a close code."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.frames: list[tuple[int, dict]] = []
        self.sockets = 0

    async def handler(self, ws) -> None:
        number = self.sockets
        self.sockets += 1
        async for text in ws:
            frame = json.loads(text)
            self.frames.append((number, frame))
            out = self.answer(number, frame)
            if isinstance(out, tuple):
                await ws.close(*out)
                return
            for item in out or ():
                if "data" in item or "error" in item:
                    ok = "error" not in item
                    item = {"op": "reply", "ref": frame["ref"], "ok": ok, **item}
                await ws.send(json.dumps(item))

    def ops(self, socket: int) -> list[str]:
        return [frame["op"] for number, frame in self.frames if number == socket]


def plain(number: int, frame: dict):
    """Every request succeeds; subscribe replies recovered with no history."""
    if frame["op"] == "connect":
        return [{"data": {"v": 1, "user": 1, "exp": None, "channels": []}}]
    if frame["op"] == "subscribe":
        return [{"data": {"channel": frame["channel"], "recovered": True, "last_id": None}}]
    if frame["op"] == "publish":
        return [{"data": {"id": None}}]
    return [{"data": {}}]


@contextlib.asynccontextmanager
async def scripted(answer):
    script = Script(answer)
    async with serve(script.handler, "127.0.0.1", 0, subprotocols=["realtime.v1"]) as server:
        script.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"
        yield script


def test_backoff_delay_is_full_jitter_below_the_capped_ceiling():
    table = [(0, 0.0, 0.0), (0, 0.5, 0.25), (1, 0.5, 0.5), (20, 0.5, 15.0), (1000, 0.999, 29.97)]
    for attempt, draw, expected in table:
        assert backoff_delay(attempt, 0.5, 30.0, lambda draw=draw: draw) == pytest.approx(expected)


def test_urls_http_becomes_ws_and_what_is_not_a_url_is_refused():
    assert Realtime("https://example.com/api/realtime/ws").url == "wss://example.com/api/realtime/ws"
    assert Realtime("http://h:8000/ws").url == "ws://h:8000/ws"
    assert Realtime("ws://h/ws").url == "ws://h/ws"
    with pytest.raises(ValueError):
        Realtime("/api/realtime/ws")


def test_token_exp_reads_the_payload_and_none_for_what_is_not_a_jwt():
    assert token_exp(fake_token(1, 1234)) == 1234
    assert token_exp("nope") is None
    assert token_exp("a.b.c") is None


async def test_requests_made_while_away_go_out_after_every_channel_is_joined_again():
    def answer(number, frame):
        if number == 0 and frame["op"] == "publish":
            return (4000, "away")  # the first socket drops on the first publish
        return plain(number, frame)

    async with scripted(answer) as script, Realtime(script.url, backoff=FAST, timeout=5) as rt:
        await rt.subscribe("a:1")
        await rt.subscribe("b:1")
        with pytest.raises(RealtimeError) as dropped:
            await rt.publish("a:1", "lost?")
        assert dropped.value.code == "disconnected"
        assert await rt.publish("a:1", "after") == {"id": None}
        assert script.ops(1) == ["ping", "subscribe", "subscribe", "publish"]


async def test_4003_without_get_token_closes_for_good_and_ends_the_iterators_with_the_reason():
    def answer(number, frame):
        if frame["op"] == "ping" and number == 0 and any(f["op"] == "subscribe" for _, f in script.frames):
            return (4003, "token_expired")
        return plain(number, frame)

    async with scripted(lambda n, f: answer(n, f)) as script:
        rt = Realtime(script.url, token=fake_token(1), backoff=FAST, timeout=5)
        async with rt:
            room = await rt.subscribe("a:1")
            with contextlib.suppress(RealtimeError):
                await rt.ping()
            await await_until(lambda: rt.state == "closed", message="the client closed")
            with pytest.raises(RealtimeError) as ended:
                await anext(room)
            assert ended.value.code == "token_expired"
            with pytest.raises(RealtimeError):
                await rt.ping()
        assert script.sockets == 1


async def test_4003_with_get_token_reconnects_with_a_fresh_token_and_a_refused_connect_too():
    tokens = [fake_token(1), fake_token(1), fake_token(1)]
    asked = []

    def get_token():
        asked.append(tokens[len(asked)])
        return asked[-1]

    def answer(number, frame):
        if frame["op"] == "connect" and number == 0:
            return [{"error": {"code": "token_expired", "detail": "expired"}}]
        if frame["op"] == "ping" and number == 1:
            return (4003, "session_revoked")
        return plain(number, frame)

    async with scripted(answer) as script, Realtime(script.url, get_token=get_token, backoff=FAST, timeout=5) as rt:
        await await_until(lambda: script.sockets >= 2 and rt.is_open, message="the second socket open")
        with contextlib.suppress(RealtimeError):
            await rt.ping()  # the server ends this session with 4003
        await await_until(lambda: script.sockets == 3 and rt.is_open, message="a third socket with a fresh token")
        connects = [frame["token"] for _, frame in script.frames if frame["op"] == "connect"]
        assert connects == tokens
        assert rt.state == "open"


async def test_a_reply_that_never_comes_is_a_timeout():
    def answer(number, frame):
        return [] if frame["op"] == "publish" else plain(number, frame)

    async with scripted(answer) as script, Realtime(script.url, backoff=FAST, timeout=0.3) as rt:
        await rt.subscribe("a:1")
        with pytest.raises(RealtimeError) as timed_out:
            await rt.publish("a:1", 1)
        assert timed_out.value.code == "timeout"
        assert rt._pending == {}
        await rt.ping()  # the connection goes on


async def test_a_reader_that_falls_behind_loses_the_oldest_as_one_gap():
    def answer(number, frame):
        out = plain(number, frame)
        if frame["op"] == "subscribe":
            out += [{"op": "message", "channel": "a:1", "id": str(n), "data": n} for n in range(10)]
        return out

    async with scripted(answer) as script, Realtime(script.url, backoff=FAST, timeout=5, buffer=4) as rt:
        room = await rt.subscribe("a:1")
        await await_until(lambda: room.last_id == "9", message="every message read from the socket")
        events = [await anext(room) for _ in range(5)]
        assert events[0] == Gap("a:1", 6, True)
        assert [e.data for e in events[1:] if isinstance(e, Message)] == [6, 7, 8, 9]
        assert room.dropped == 6


def client_tasks() -> list[asyncio.Task]:
    """The running tasks whose coroutine is realtime.client's."""
    return [task for task in asyncio.all_tasks() if not task.done()
            and "realtime/client/" in task.get_coro().cr_code.co_filename]


async def test_close_ends_the_iterators_leaves_no_task_and_refuses_what_comes_after():
    async with scripted(plain) as script:
        rt = Realtime(script.url, backoff=FAST, timeout=5)
        async with rt:
            room = await rt.subscribe("a:1", presence=True)
            reading = asyncio.ensure_future(anext(room))
            await rt.ping()
            assert client_tasks()  # the runner and the reader, at least
        with pytest.raises(StopAsyncIteration):
            await reading
        assert client_tasks() == []
        with pytest.raises(RealtimeError) as closed:
            await rt.subscribe("b:1")
        assert closed.value.code == "closed"
        assert rt.state == "closed"
