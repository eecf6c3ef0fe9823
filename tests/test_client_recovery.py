"""realtime.client's recovery rules, from the table realtime.js is tested from too (tests/clients/recovery.json).

Twice: on the sans-IO ChannelState alone, and on the whole client against a scripted server that
plays each case's sockets in turn (the reply and its frames in one go, then a close that makes the
client reconnect; a sentinel message without an id ends the case)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from websockets.asyncio.server import serve

from realtime.client import ChannelState, Gap, Message, Realtime, Snapshot
from tests.waiting import await_until

TABLE = json.loads((Path(__file__).parent / "clients" / "recovery.json").read_text())
CASES = [pytest.param(case, id=case["name"]) for case in TABLE["cases"]]
CHANNEL = "room:recovery"
END = "__end_of_case__"


def as_table(event: Message | Gap | Snapshot) -> dict:
    if isinstance(event, Message):
        return {"message": event.data}
    if isinstance(event, Snapshot):
        return {"snapshot": event.data}
    return {"gap": {"missed": event.missed, "recovered": event.recovered}}


@pytest.mark.parametrize("case", CASES)
def test_channel_state_follows_the_table(case):
    state = ChannelState(CHANNEL, case["lastId"])
    events, sent = [], []
    for step in case["connections"]:
        frame = state.subscribe_frame()
        sent.append(frame.get("last_id"))
        events += state.joined({"channel": CHANNEL, **step["reply"]})
        for extra in step["frames"]:
            events += state.receive({**extra, "channel": CHANNEL})
    assert [as_table(e) for e in events] == case["events"]
    assert sent == [step["sent_last_id"] for step in case["connections"]]
    assert state.duplicates == case["duplicates"]


@pytest.mark.parametrize("case", CASES)
async def test_the_client_follows_the_table_against_a_scripted_server(case):
    steps = case["connections"]
    subscribes: list[str | None] = []
    sockets = [0]

    async def handler(ws):
        number = sockets[0]
        sockets[0] += 1
        step, last = steps[min(number, len(steps) - 1)], number >= len(steps) - 1
        async for text in ws:
            frame = json.loads(text)
            if frame["op"] != "subscribe":
                data = {"v": 1, "user": None, "exp": None, "channels": []} if frame["op"] == "connect" else {}
                await ws.send(json.dumps({"op": "reply", "ref": frame["ref"], "ok": True, "data": data}))
                continue
            subscribes.append(frame.get("last_id"))
            burst = [{"op": "reply", "ref": frame["ref"], "ok": True, "data": {"channel": CHANNEL, **step["reply"]}}]
            burst += [{**extra, "channel": CHANNEL} for extra in step["frames"]]
            if last:
                burst.append({"op": "message", "channel": CHANNEL, "id": None, "data": END})
            for out in burst:
                await ws.send(json.dumps(out))
            if not last:
                await ws.close(4000, "next step")

    async with serve(handler, "127.0.0.1", 0, subprotocols=["realtime.v1"]) as server:
        port = server.sockets[0].getsockname()[1]
        async with Realtime(f"ws://127.0.0.1:{port}/ws", backoff=(0.005, 0.02), timeout=5) as rt:
            sub = await rt.subscribe(CHANNEL, last_id=case["lastId"])
            events = []

            async def read() -> None:
                async for event in sub:
                    if isinstance(event, Message) and event.data == END:
                        return
                    events.append(as_table(event))

            await asyncio.wait_for(read(), 20)
            assert events == case["events"]
            assert subscribes == [step["sent_last_id"] for step in steps]
            assert sub.duplicates == case["duplicates"]
            await await_until(lambda: rt.is_open, message="the client open on the last socket")
