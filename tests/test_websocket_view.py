"""WebSocketView driven by Channels' communicator: hooks, close codes, frames, keepalive, cleanup."""

import asyncio
import gc

import pytest
from channels.testing import WebsocketCommunicator

from realtime import CloseCode, WebSocketException, WebSocketView
from tests.waiting import asettled


async def connect(view, path="/ws", **kwargs):
    communicator = WebsocketCommunicator(view.as_asgi(), path, **kwargs)
    accepted, subprotocol = await communicator.connect()
    return communicator, accepted, subprotocol


def recording_view(**attrs):
    results = {"connect": 0, "receive": [], "disconnect": []}

    class View(WebSocketView):
        keepalive = 0

        async def on_connect(self, ws, **params):
            results["connect"] += 1

        async def on_receive(self, ws, data):
            results["receive"].append(data)
            await ws.send_json({"got": data})

        async def on_disconnect(self, ws, code):
            results["disconnect"].append(code)

    for name, value in attrs.items():
        setattr(View, name, value)
    return View, results


async def test_json_message_reaches_on_receive_and_reply_is_sent():
    View, results = recording_view()
    communicator, accepted, _ = await connect(View)
    assert accepted
    await communicator.send_json_to({"a": [1, 2]})
    assert await communicator.receive_json_from() == {"got": {"a": [1, 2]}}
    await communicator.disconnect(code=1000)
    assert results == {"connect": 1, "receive": [{"a": [1, 2]}], "disconnect": [1000]}


async def test_client_disconnect_calls_on_disconnect_once_with_its_code():
    View, results = recording_view()
    communicator, _, _ = await connect(View)
    await communicator.disconnect(code=4321)  # returns once the application has ended
    assert results["disconnect"] == [4321]


async def test_error_in_on_connect_closes_with_1011_and_still_runs_on_disconnect():
    View, results = recording_view()

    async def on_connect(self, ws, **params):
        raise RuntimeError("boom")

    View.on_connect = on_connect
    communicator, accepted, _ = await connect(View)
    assert accepted
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 1011, "reason": ""}
    await communicator.wait()
    assert results["disconnect"] == [1011]


async def test_error_in_on_receive_closes_with_1011_and_runs_on_disconnect():
    View, results = recording_view()

    async def on_receive(self, ws, data):
        raise RuntimeError("boom")

    View.on_receive = on_receive
    communicator, _, _ = await connect(View)
    await communicator.send_json_to({"x": 1})
    assert (await communicator.receive_output())["code"] == CloseCode.INTERNAL_ERROR
    await communicator.wait()
    assert results["disconnect"] == [1011]


async def test_websocket_exception_closes_with_its_code_and_reason():
    View, results = recording_view()

    async def on_receive(self, ws, data):
        raise WebSocketException(4400, "bad request")

    View.on_receive = on_receive
    communicator, _, _ = await connect(View)
    await communicator.send_json_to({"x": 1})
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 4400, "reason": "bad request"}
    await communicator.wait()
    assert results["disconnect"] == [4400]


@pytest.mark.parametrize(
    ("encoding", "frame", "code"),
    [
        ("json", {"text_data": "{not json"}, CloseCode.INVALID_PAYLOAD),
        ("json", {"text_data": "[" * 100_000}, CloseCode.INVALID_PAYLOAD),
        ("json", {"bytes_data": b"{}"}, CloseCode.UNSUPPORTED_DATA),
        ("text", {"bytes_data": b"hi"}, CloseCode.UNSUPPORTED_DATA),
        ("bytes", {"text_data": "hi"}, CloseCode.UNSUPPORTED_DATA),
    ],
)
async def test_bad_frames_close_with_a_documented_code(encoding, frame, code):
    View, results = recording_view(encoding=encoding)
    communicator, _, _ = await connect(View)
    await communicator.send_to(**frame)
    message = await communicator.receive_output()
    assert message["type"] == "websocket.close"
    assert message["code"] == code
    await communicator.wait()
    assert results["receive"] == []
    assert results["disconnect"] == [code]


@pytest.mark.parametrize(
    ("encoding", "frame"), [("text", {"text_data": "héllo"}), ("bytes", {"bytes_data": b"\x00\xff"})]
)
async def test_text_and_bytes_encodings_pass_frames_through(encoding, frame):
    View, results = recording_view(encoding=encoding)

    async def on_receive(self, ws, data):
        results["receive"].append(data)

    View.on_receive = on_receive
    communicator, _, _ = await connect(View)
    await communicator.send_to(**frame)
    await communicator.disconnect()
    assert results["receive"] == [next(iter(frame.values()))]


async def test_message_over_max_size_closes_with_1009():
    View, _ = recording_view(max_message_size=10)
    communicator, _, _ = await connect(View)
    await communicator.send_to(text_data='"' + "x" * 20 + '"')
    assert (await communicator.receive_output())["code"] == CloseCode.MESSAGE_TOO_BIG


@pytest.mark.parametrize(
    ("encoding", "heartbeat"),
    [("json", {"type": "websocket.send", "text": '{"type":"ping"}'}),
     ("text", {"type": "websocket.send", "text": "ping"}),
     ("bytes", {"type": "websocket.send", "bytes": b""})],
)
async def test_keepalive_sends_a_heartbeat_every_interval(encoding, heartbeat):
    View, _ = recording_view(encoding=encoding, keepalive=0.05)
    communicator, _, _ = await connect(View)
    loop = asyncio.get_running_loop()
    start = loop.time()
    beats = [await communicator.receive_output(timeout=1) for _ in range(3)]
    elapsed = loop.time() - start
    assert beats == [heartbeat] * 3
    assert 0.12 <= elapsed < 1.0
    await communicator.disconnect()


async def test_sockets_share_one_heartbeat_timer_and_leave_it_when_they_close():
    from realtime.heartbeat import beat_for

    View, _ = recording_view(keepalive=0.05)
    communicators = [(await connect(View))[0] for _ in range(20)]
    beat = beat_for(0.05)
    assert len(beat.members) == 20 and beat._handle is not None
    for communicator in communicators:  # every socket beats, at most one interval apart
        await communicator.receive_output(timeout=0.5)
        await communicator.receive_output(timeout=0.5)
    for communicator in communicators:
        await communicator.disconnect()
    assert beat.members == {} and beat._handle is None


async def test_keepalive_zero_sends_nothing():
    View, _ = recording_view(keepalive=0)
    communicator, _, _ = await connect(View)
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


async def test_subprotocol_is_selected_when_offered():
    View, _ = recording_view(subprotocol="realtime.v1")
    communicator, accepted, subprotocol = await connect(View, subprotocols=["other", "realtime.v1"])
    assert accepted and subprotocol == "realtime.v1"
    await communicator.disconnect()


async def test_client_without_the_subprotocol_is_refused_with_1008():
    View, results = recording_view(subprotocol="realtime.v1")
    communicator, accepted, _ = await connect(View, subprotocols=["other"])
    assert accepted
    message = await communicator.receive_output()
    assert message["code"] == CloseCode.POLICY_VIOLATION
    assert "realtime.v1" in message["reason"]
    assert results["connect"] == 0


async def test_stream_hook_pushes_items_and_closes_with_1000_when_done():
    class Pusher(WebSocketView):
        keepalive = 0

        async def stream(self, ws, **params):
            for i in range(3):
                yield {"n": i}

    communicator, _, _ = await connect(Pusher)
    assert [await communicator.receive_json_from() for _ in range(3)] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert (await communicator.receive_output())["code"] == CloseCode.NORMAL


async def test_stream_hook_error_closes_with_1011():
    class Broken(WebSocketView):
        keepalive = 0

        async def stream(self, ws, **params):
            yield {"n": 0}
            raise RuntimeError("feed died")

    communicator, _, _ = await connect(Broken)
    assert await communicator.receive_json_from() == {"n": 0}
    assert (await communicator.receive_output())["code"] == CloseCode.INTERNAL_ERROR


async def test_disconnect_cancels_stream_and_runs_its_finally():
    finalized = asyncio.Event()

    class Forever(WebSocketView):
        keepalive = 0.01

        async def stream(self, ws, **params):
            try:
                yield {"tick": 1}
                await asyncio.Event().wait()  # streaming, until cancelled
            finally:
                finalized.set()

    communicator, _, _ = await connect(Forever)
    await communicator.receive_output()
    await communicator.disconnect()
    await asyncio.wait_for(finalized.wait(), 1)


async def test_a_thousand_connect_disconnect_cycles_leave_no_task_behind():
    from realtime import Channel

    channel = Channel("cycles")

    class Subscribed(WebSocketView):
        keepalive = 0.5

        async def stream(self, ws, **params):
            async for message in channel.subscribe():
                yield message

    gc.collect()
    baseline = len(asyncio.all_tasks())
    for _ in range(1000):
        communicator, _, _ = await connect(Subscribed)
        await communicator.disconnect()
    await asettled(lambda: len(asyncio.all_tasks()), lambda n: n == baseline, 5)
    gc.collect()
    assert len(asyncio.all_tasks()) == baseline
    assert channel.subscriber_count == 0


async def test_instance_per_connection():
    seen = []

    class View(WebSocketView):
        keepalive = 0

        async def on_connect(self, ws, **params):
            seen.append(id(self))
            self.state = len(seen)
            await ws.send_json({"state": self.state})

    first, _, _ = await connect(View)
    second, _, _ = await connect(View)
    assert await first.receive_json_from() == {"state": 1}
    assert await second.receive_json_from() == {"state": 2}
    assert seen[0] != seen[1]
    await first.disconnect()
    await second.disconnect()


# -- one read path: a handler that may never read gets a reader beside it ---------------------------


def test_only_classes_that_override_handle_get_a_reader():
    class Default(WebSocketView):
        pass

    class PushOnly(WebSocketView):
        async def _handle(self, ws):
            await ws.accept()

    class Inherited(PushOnly):
        pass

    class ReadsItself(WebSocketView):
        handler_reads = True

        async def _handle(self, ws):
            await super()._handle(ws)

    assert (Default.handler_reads, PushOnly.handler_reads, Inherited.handler_reads) == (True, False, False)
    assert ReadsItself.handler_reads is True


async def test_a_push_only_handle_is_cut_short_when_the_client_leaves_and_leaves_no_task():
    ran = []

    class PushOnly(WebSocketView):
        async def _handle(self, ws):
            await ws.accept()
            await ws.send_json({"hello": 1})
            try:
                await asyncio.Event().wait()  # never reads, never ends by itself
            finally:
                ran.append(ws.client_state.name)

    gc.collect()
    baseline = len(asyncio.all_tasks())
    communicator, accepted, _ = await connect(PushOnly)
    assert accepted and await communicator.receive_json_from() == {"hello": 1}
    await communicator.disconnect(code=4100)  # waits for the application to return, not raise
    assert ran == ["DISCONNECTED"]
    assert len(asyncio.all_tasks()) == baseline


async def test_a_handle_override_that_reads_gets_the_messages_through_receive():
    class Reads(WebSocketView):
        async def _handle(self, ws):
            await ws.accept()
            while True:
                await ws.send_json({"echo": await ws.receive_json()})

    communicator, _, _ = await connect(Reads)
    for n in range(3):
        await communicator.send_json_to({"n": n})
        assert await communicator.receive_json_from() == {"echo": {"n": n}}
    await communicator.disconnect()


async def test_a_push_only_handle_that_raises_closes_1011():
    class Fails(WebSocketView):
        async def _handle(self, ws):
            await ws.accept()
            raise RuntimeError("boom")

    communicator, _, _ = await connect(Fails)
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 1011, "reason": ""}
    await communicator.wait()


async def test_a_shutdown_cancels_a_push_only_handle_with_1001_and_propagates():
    class PushOnly(WebSocketView):
        async def _handle(self, ws):
            await ws.accept()
            await asyncio.Event().wait()

    communicator, _, _ = await connect(PushOnly)
    communicator.future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await communicator.future
    assert communicator.output_queue.get_nowait() == {
        "type": "websocket.close", "code": 1001, "reason": "Server shutting down"}


async def test_a_send_that_finds_the_client_gone_while_the_view_reads_logs_the_clients_code(caplog, monkeypatch):
    """uvicorn's send raises ClientDisconnected() with no code once the client's close frame has come,
    and puts the code only in the websocket.disconnect it queues. A push task's send that meets it
    while the connection's task reads must not log a guess (1006): the reader gets the client's 1000."""
    import logging

    from realtime.servers.base import ClientDisconnected

    class Pusher(WebSocketView):
        keepalive = 0

        async def stream(self, ws, **params):
            while True:
                yield {"tick": 1}
                await asyncio.sleep(0)

    inbox: asyncio.Queue = asyncio.Queue()
    sent: list = []
    closing = asyncio.Event()

    async def send(message):
        if closing.is_set() and message["type"] == "websocket.send":
            # What uvicorn does after the close frame: the send fails, the code waits in the queue.
            asyncio.get_running_loop().call_soon(inbox.put_nowait, {"type": "websocket.disconnect", "code": 1000})
            raise ClientDisconnected()
        sent.append(message)
        if len(sent) == 3:
            closing.set()

    monkeypatch.setattr(logging.getLogger("realtime"), "propagate", True)
    caplog.set_level(logging.INFO, logger="realtime.connections")
    scope = {"type": "websocket", "path": "/push", "url_route": {"args": (), "kwargs": {}, "route": "push"},
             "headers": [], "query_string": b"", "subprotocols": [], "client": None}
    inbox.put_nowait({"type": "websocket.connect"})
    await asyncio.wait_for(Pusher()(scope, inbox.get, send), 5)
    ended = [r.getMessage() for r in caplog.records if r.name == "realtime.connections"]
    assert len(set(ended)) == 1 and "code=1000 closed_by=client" in ended[0], ended
