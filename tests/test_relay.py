"""The direct delivery path (``relay = channel``) delivers exactly what the generic ``stream()`` does.

On daphne and uvicorn the frame is written straight to each transport that has room; every test
runs again with ``REALTIME["DIRECT_WRITES"]`` off (the ``-asgi`` servers of the ``wire`` fixture), where
the relay takes the ASGI path. Both are checked against the same server, side by side with the
generic path.
"""

from __future__ import annotations

import asyncio
import gc
import json

import httpx
import pytest
import websockets
from channels.testing import WebsocketCommunicator

from realtime import Channel, SSEView, WebSocketView
from realtime.pubsub import ids
from realtime.sealed_ids import TOKEN_LENGTH
from tests.history_ids import epoch, seq
from tests.raw_ws import RawClient
from tests.waiting import asettled, await_until, quiet_wire, wire_subscribers
from tests.wire import report

pytestmark = pytest.mark.also_without_direct_writes


async def received(ws, count: int) -> list[dict]:
    return [json.loads(await asyncio.wait_for(ws.recv(), 30)) for _ in range(count)]


@pytest.mark.parametrize("burst", [False, True], ids=["a-turn-each", "one-turn"])
async def test_relay_and_stream_deliver_the_same_messages_in_the_same_order(wire, burst):
    """One message per loop turn, or all 300 in one turn (one write carries each socket's frames)."""
    before = (await quiet_wire(wire))["subscribers"]
    async with websockets.connect(f"{wire.ws_url}/api/w/fanout") as generic, \
            websockets.connect(f"{wire.ws_url}/api/w/relay") as relay, \
            websockets.connect(f"{wire.ws_url}/api/w/even-relay") as even, \
            websockets.connect(f"{wire.ws_url}/api/w/publish") as publisher:
        await wire_subscribers(wire, before + 3)
        await publisher.send(json.dumps({"count": 300, "size": 100, "pause": 0, "burst": burst}))
        by_generic, by_relay, by_even = await asyncio.gather(
            received(generic, 300), received(relay, 300), received(even, 150)
        )
        assert json.loads(await publisher.recv()) == {"published": 300}
    assert by_relay == by_generic
    assert [m["n"] for m in by_relay] == list(range(300))
    assert [m["n"] for m in by_even] == list(range(0, 300, 2))


@pytest.mark.parametrize("burst", [False, True], ids=["a-turn-each", "one-turn"])
async def test_a_relay_client_that_falls_behind_is_told_how_many_it_missed(wire, burst):
    """Nothing is lost without being counted and signalled: received + missed == published, in order,
    whether the messages come one per loop turn or all in one turn (the turn's frames go back to the
    queue when the transport has no room)."""
    before = (await quiet_wire(wire))["subscribers"]
    slow = RawClient(wire.port, "/api/w/relay", rcvbuf=4096)
    try:
        await wire_subscribers(wire, before + 1)
        async with websockets.connect(f"{wire.ws_url}/api/w/publish") as publisher:
            await publisher.send(json.dumps({"count": 1500, "size": 4000, "pause": 0, "burst": burst}))
            await publisher.recv()  # published: what the queue could not hold is dropped and counted
        seen, missed = [], 0
        slow.sock.settimeout(3)
        while len(seen) + missed < 1500:
            _, payload = await asyncio.to_thread(slow.read_frame)
            message = json.loads(payload)
            if "gap" in message:
                missed += message["gap"]
            else:
                seen.append(message["n"])
        assert missed > 0, "the client was never behind: the test did not exercise the queue"
        assert seen == sorted(seen) and len(seen) == len(set(seen))
        assert seen[-1] == 1499
        assert len(seen) + missed == 1500
    finally:
        slow.close()


async def test_relay_sockets_leave_no_subscriber_behind(wire):
    before = (await quiet_wire(wire))["subscribers"]
    for _ in range(3):
        clients = [await websockets.connect(f"{wire.ws_url}/api/w/relay") for _ in range(20)]
        await wire_subscribers(wire, before + 20)
        assert (await report(wire))["subscribers"] == before + 20
        for client in clients:
            await client.close()
    await wire_subscribers(wire, before)
    assert (await report(wire))["subscribers"] == before


@pytest.mark.parametrize("prefix", ["raise", "nan"])
async def test_a_failing_relay_message_closes_only_its_own_sockets_with_1011(wire, prefix):
    """A bug in one view's hook is that view's: its sockets get 1011, the channel's others go on."""
    before = (await quiet_wire(wire))["subscribers"]
    async with websockets.connect(f"{wire.ws_url}/api/w/faulty-relay") as faulty, \
            websockets.connect(f"{wire.ws_url}/api/w/relay") as healthy, \
            websockets.connect(f"{wire.ws_url}/api/w/publish") as publisher:
        await wire_subscribers(wire, before + 2)
        await publisher.send(json.dumps({"count": 10, "size": 10, "prefix": prefix}))
        assert [m["n"] for m in await received(healthy, 10)] == list(range(10))
        assert [m["n"] for m in await received(faulty, 3)] == [0, 1, 2]
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(faulty.recv(), 10)
        assert faulty.close_code == 1011
        assert json.loads(await publisher.recv()) == {"published": 10}
        assert (await report(wire))["subscribers"] == before + 1  # the faulty socket's sink is gone
    await wire_subscribers(wire, before)
    assert (await report(wire))["subscribers"] == before


async def test_a_failing_sse_relay_message_ends_the_stream_with_internal_error(wire):
    before = (await quiet_wire(wire))["subscribers"]
    stream = asyncio.create_task(sse_frames(f"{wire.url}/api/w/faulty-relay-events", 10))
    await wire_subscribers(wire, before + 1)
    async with websockets.connect(f"{wire.ws_url}/api/w/publish") as publisher:
        await publisher.send(json.dumps({"count": 10, "size": 10}))
        await publisher.recv()
    frames = await asyncio.wait_for(stream, 10)  # the stream ends: fewer than 10 frames
    assert [json.loads(f.split(b"data: ")[1])["n"] for f in frames[:3]] == [0, 1, 2]
    assert frames[3:] == [b'event: error\ndata: {"code":"internal_error","detail":"The stream failed; reconnect"}']
    # Resuming replays through the same hook, and fails the same way.
    first_id = frames[0].split(b"id: ")[1].split(b"\n")[0].decode()
    resumed = await asyncio.wait_for(
        sse_frames(f"{wire.url}/api/w/faulty-relay-events", 10, {"Last-Event-ID": first_id}), 10
    )
    assert [json.loads(f.split(b"data: ")[1]).get("n") for f in resumed[:2]] == [1, 2]
    assert resumed[2].startswith(b"event: error")


async def test_a_stream_that_only_forwards_is_relayed_and_delivers_what_it_would_as_written(wire):
    """``async for message in fanout.subscribe(): yield message`` runs on the direct path; the same
    generator with ``subscribe(maxlen=...)`` (not a proven form) runs as written, beside it."""
    before = await quiet_wire(wire)
    async with websockets.connect(f"{wire.ws_url}/api/w/forwarded") as forwarded, \
            websockets.connect(f"{wire.ws_url}/api/w/written-out") as written, \
            websockets.connect(f"{wire.ws_url}/api/w/publish") as publisher:
        now = await wire_subscribers(wire, before["subscribers"] + 2)
        drains = now["drains"]
        assert drains.get("Relay", 0) == before["drains"].get("Relay", 0) + 1, drains
        assert drains.get("Reader", 0) == before["drains"].get("Reader", 0) + 1, drains
        await publisher.send(json.dumps({"count": 300, "size": 100, "pause": 0}))
        by_forwarded, by_written = await asyncio.gather(received(forwarded, 300), received(written, 300))
        assert json.loads(await publisher.recv()) == {"published": 300}
    assert by_forwarded == by_written
    assert [m["n"] for m in by_forwarded] == list(range(300))
    await wire_subscribers(wire, before["subscribers"])
    # The generator run as written writes its frames straight to the transport too, where it can.
    was = before["direct"].get("WrittenOut", 0)
    closes = len(before["closed"].get("WrittenOut", []))
    after = await asettled(
        lambda: report(wire), lambda now: len(now["closed"].get("WrittenOut", [])) > closes, 15, 0.05
    )
    if before["direct_writes"]:
        assert after["direct"].get("WrittenOut", 0) > was, after["direct"]
    else:
        assert after["direct"].get("WrittenOut", 0) == was, after["direct"]


@pytest.mark.parametrize("path", ["forwarded", "written-out"])
async def test_a_forwarding_stream_behind_drops_silently_in_order_as_its_subscription_does(wire, path):
    """Under backpressure both forms keep order, send no duplicate and no gap notice, end with the newest."""
    before = (await quiet_wire(wire))["subscribers"]
    slow = RawClient(wire.port, f"/api/w/{path}", rcvbuf=4096)
    try:
        await wire_subscribers(wire, before + 1)
        async with websockets.connect(f"{wire.ws_url}/api/w/publish") as publisher:
            await publisher.send(json.dumps({"count": 1500, "size": 4000, "pause": 0}))
            await publisher.recv()
        seen: list[int] = []
        slow.sock.settimeout(3)
        while not seen or seen[-1] != 1499:
            _, payload = await asyncio.to_thread(slow.read_frame)
            seen.append(json.loads(payload)["n"])
        assert len(seen) < 1500, "the client was never behind: the test did not exercise the queue"
        assert seen == sorted(seen) and len(seen) == len(set(seen))
    finally:
        slow.close()
    await wire_subscribers(wire, before)


forwarded_ticks = Channel("relay-forwarded", maxlen=500)


class ForwardedTicks(WebSocketView):
    keepalive = 0

    async def stream(self, ws, **params):
        async for message in forwarded_ticks.subscribe():
            yield message


class WrittenOutTicks(WebSocketView):
    keepalive = 0

    async def stream(self, ws, **params):
        async for message in forwarded_ticks.subscribe(maxlen=forwarded_ticks.maxlen):
            yield message


@pytest.mark.django_db
async def test_a_forwarded_stream_drops_the_same_messages_as_its_generator_in_process():
    """600 messages in one loop turn to a queue of 500: both forms drop the same 100 oldest, silently."""
    communicators = [WebsocketCommunicator(view.as_asgi(), "/ws") for view in (ForwardedTicks, WrittenOutTicks)]
    for communicator in communicators:
        assert (await communicator.connect())[0]
    await await_until(lambda: forwarded_ticks.subscriber_count == 2, message="both subscriptions")
    kinds = sorted(type(queue.drain).__name__ for queue in forwarded_ticks.subscribers)
    assert kinds == ["Reader", "Relay"]
    for n in range(600):
        await forwarded_ticks.publish({"n": n})  # no suspension: nothing is sent meanwhile
    forwarded = [(await communicators[0].receive_json_from())["n"] for _ in range(500)]
    written = [(await communicators[1].receive_json_from())["n"] for _ in range(500)]
    assert forwarded == written == list(range(100, 600))
    for communicator in communicators:
        assert await communicator.receive_nothing(0.05)
        await communicator.disconnect()
    assert forwarded_ticks.subscriber_count == 0


class ForwardedTickEvents(SSEView):
    ping_interval = 0

    async def stream(self, request, **params):
        async for message in forwarded_ticks.subscribe():
            yield {"data": message}


class WrittenOutTickEvents(SSEView):
    ping_interval = 0

    async def stream(self, request, **params):
        async for message in forwarded_ticks.subscribe(maxlen=forwarded_ticks.maxlen):
            yield {"data": message}


@pytest.mark.django_db
async def test_a_forwarded_sse_stream_drops_the_same_messages_as_its_generator_in_process():
    """As above for SSE: the same 100 oldest dropped without a reset, the same frames, no ids, no resume."""
    from django.test import AsyncRequestFactory

    bodies = []
    for view in (ForwardedTickEvents, WrittenOutTickEvents):
        request = AsyncRequestFactory().get("/events", headers={"Last-Event-ID": "0-1"})  # neither resumes
        bodies.append(aiter((await view.as_view()(request)).streaming_content))
    try:
        assert [await anext(body) for body in bodies] == [b": connected\n\n"] * 2
        pending = [asyncio.ensure_future(anext(body)) for body in bodies]  # each subscribes, then waits
        await await_until(lambda: forwarded_ticks.subscriber_count == 2, message="both streams' subscriptions")
        kinds = sorted(type(queue.drain).__name__ for queue in forwarded_ticks.subscribers)
        assert kinds == ["Reader", "StreamDrain"]
        for n in range(600):
            await forwarded_ticks.publish({"n": n})
        frames = []
        for first, body in zip(pending, bodies, strict=True):
            frames.append([await first] + [await anext(body) for _ in range(499)])
        assert frames[0] == frames[1]
        assert frames[0] == [f'data: {{"n":{n}}}\n\n'.encode() for n in range(100, 600)]
    finally:
        for body in bodies:
            await body.aclose()
    # Django's wrapper does not close the body it wraps; the loop's finalizer does, once it is unreferenced.
    del bodies, pending, first, body
    gc.collect()
    await await_until(lambda: forwarded_ticks.subscriber_count == 0, message="both streams gone")


class OwnSubscribe(Channel):
    def subscribe(self, *args, **kwargs):
        return super().subscribe(*args, **kwargs)


own_subscribe = OwnSubscribe()
not_a_channel = object()


def forwarding_views() -> dict[str, tuple[type, bool]]:
    """Views whose stream() forwards ``forwarded_ticks`` (True) or does something else (False)."""
    local = forwarded_ticks

    class Global(WebSocketView):
        async def stream(self, ws, **params):
            async for message in forwarded_ticks.subscribe():
                yield message

    class Closure(WebSocketView):
        async def stream(self, ws):
            async for message in local.subscribe():
                yield message

    class Attribute(WebSocketView):
        channel = forwarded_ticks

        async def stream(self, ws, **params):
            async for m in self.channel.subscribe():
                yield m

    class Filtered(WebSocketView):
        async def stream(self, ws, **params):
            async for message in forwarded_ticks.subscribe():
                if message["n"] % 2:
                    yield message

    class Transformed(WebSocketView):
        async def stream(self, ws, **params):
            async for message in forwarded_ticks.subscribe():
                yield {"tick": message}

    class WithGaps(WebSocketView):
        async def stream(self, ws, **params):
            async for message in forwarded_ticks.subscribe(gaps=True):
                yield message

    class Guarded(WebSocketView):
        async def stream(self, ws, **params):
            try:
                async for message in forwarded_ticks.subscribe():
                    yield message
            finally:
                pass

    class ThenMore(WebSocketView):
        async def stream(self, ws, **params):
            async for message in forwarded_ticks.subscribe():
                yield message
            yield {"end": True}

    class YieldsAnother(WebSocketView):
        async def stream(self, ws, **params):
            async for _message in forwarded_ticks.subscribe():
                yield ws.scope["path"]

    class OtherArgument(WebSocketView):
        async def stream(self, ws, **params):
            async for message in ws.subscribe():
                yield message

    class Property(WebSocketView):
        @property
        def channel(self):
            return forwarded_ticks

        async def stream(self, ws, **params):
            async for m in self.channel.subscribe():
                yield m

    class Subclass(WebSocketView):
        async def stream(self, ws, **params):
            async for message in own_subscribe.subscribe():
                yield message

    class NotAChannel(WebSocketView):
        async def stream(self, ws, **params):
            async for message in not_a_channel.subscribe():
                yield message

    return {view.__name__: (view, proven) for view, proven in [
        (Global, True), (Closure, True), (Attribute, True), (Filtered, False), (Transformed, False),
        (WithGaps, False), (Guarded, False), (ThenMore, False), (YieldsAnother, False), (OtherArgument, False),
        (Property, False), (Subclass, False), (NotAChannel, False),
    ]}


@pytest.mark.parametrize("name", list(forwarding_views()))
def test_only_a_stream_that_forwards_a_channel_as_it_is_is_proven(name):
    from realtime.forwarding import DATA, MESSAGE, forwarded_channel

    view, proven = forwarding_views()[name]
    assert forwarded_channel(view(), MESSAGE, WebSocketView.stream) is (forwarded_ticks if proven else None)
    assert forwarded_channel(view(), DATA, WebSocketView.stream) is None  # an SSE stream yields {"data": m}


def test_an_sse_stream_is_proven_only_when_it_yields_data_and_nothing_else():
    from realtime.forwarding import DATA, MESSAGE, forwarded_channel

    assert forwarded_channel(ForwardedTickEvents(), DATA, SSEView.stream) is forwarded_ticks
    assert forwarded_channel(ForwardedTickEvents(), MESSAGE, SSEView.stream) is None
    assert forwarded_channel(WrittenOutTickEvents(), DATA, SSEView.stream) is None

    class WithEvent(SSEView):
        async def stream(self, request, **params):
            async for message in forwarded_ticks.subscribe():
                yield {"data": message, "event": "tick"}

    assert forwarded_channel(WithEvent(), DATA, SSEView.stream) is None
    # Set on the instance rather than the class: not proven either.
    instance = ForwardedTickEvents()
    instance.stream = WrittenOutTickEvents.stream.__get__(instance)
    assert forwarded_channel(instance, DATA, SSEView.stream) is None


def test_forward_streams_off_runs_every_stream_as_written(settings):
    from realtime.forwarding import DATA, MESSAGE, forwarded_channel

    view = next(view for view, proven in forwarding_views().values() if proven)
    assert forwarded_channel(view(), MESSAGE, WebSocketView.stream) is forwarded_ticks
    settings.REALTIME = {**getattr(settings, "REALTIME", {}), "FORWARD_STREAMS": False}
    assert forwarded_channel(view(), MESSAGE, WebSocketView.stream) is None
    assert forwarded_channel(ForwardedTickEvents(), DATA, SSEView.stream) is None


ticks = Channel("relay-unit")


class Ticks(WebSocketView):
    relay = ticks

    def relay_message(self, message):
        return {"t": message["t"] * 10} if message["t"] != 2 else None


@pytest.mark.django_db
async def test_a_relay_view_filters_and_transforms_in_process():
    communicator = WebsocketCommunicator(Ticks.as_asgi(), "/ws")
    assert (await communicator.connect())[0]
    await await_until(lambda: ticks.subscriber_count == 1, message="the relay view's subscription")
    assert ticks.subscriber_count == 1
    for t in range(4):
        await ticks.publish({"t": t})
    assert [await communicator.receive_json_from() for _ in range(3)] == [{"t": 0}, {"t": 10}, {"t": 30}]
    await communicator.disconnect()
    assert ticks.subscriber_count == 0


history_ticks = Channel("relay-history-ticks", history=10)


class ResumableEvents(SSEView):
    ping_interval = 0
    relay = history_ticks


class ResumableFollow(SSEView):
    ping_interval = 0

    def stream(self, request, **params):
        return self.follow(history_ticks)


async def resume_stream(view: type, last_id: str, frames: int) -> list[bytes]:
    from django.test import AsyncRequestFactory

    request = AsyncRequestFactory().get("/events", headers={"Last-Event-ID": last_id})
    body = (await view.as_view()(request)).streaming_content
    read = [chunk async for chunk in _first(body, frames)]
    await body.aclose()
    return read


async def _first(body, count):
    async for chunk in body:
        if not chunk.startswith(b":"):  # the opening comment
            yield chunk
            count -= 1
            if count == 0:
                return


@pytest.mark.django_db
@pytest.mark.parametrize("view", [ResumableEvents, ResumableFollow], ids=["relay", "follow"])
async def test_an_sse_resume_is_counted_in_the_history_metrics_on_either_path(view):
    from realtime.ops.stats import stats

    for n in range(5):
        await history_ticks.publish({"n": n})
    newest = await history_ticks.newest_id()
    held = len((await history_ticks.replay_after("not-an-id"))[0])  # what a reset replays after its event
    before = (stats.replays, stats.replayed, stats.resets)
    three = ids.make(epoch(newest), seq(newest) - 3)
    assert [json.loads(f.split(b"data: ")[1])["n"] for f in await resume_stream(view, three, 3)] == [2, 3, 4]
    assert (await resume_stream(view, "not-an-id", 1))[0].startswith(b"event: reset\n")
    after = (stats.replays, stats.replayed, stats.resets)
    assert [now - then for now, then in zip(after, before, strict=True)] == [2, 3 + held, 1]


def even(message):
    return message if message["n"] % 2 == 0 else None


def filtered_view(kind: str, channel: Channel) -> type:
    """An SSE view of ``channel``: a relay with a filter of its own, follow() with a predicate, a relay
    declared sealed without a filter, or the relay's filter declared public (``sealed_ids = False``)."""
    if kind == "follow":
        return type("EvenFollow", (SSEView,), {"ping_interval": 0, "stream": lambda self, request, **params: (
            self.follow(channel, predicate=even))})
    attributes = {"ping_interval": 0, "relay": channel}
    if kind in ("relay", "public"):
        attributes["relay_message"] = lambda self, message: even(message)
    if kind != "relay":
        attributes["sealed_ids"] = kind == "declared"
    return type(f"{kind.title()}Events", (SSEView,), attributes)


def frame_id(frame: bytes) -> str:
    return frame.split(b"id: ")[1].split(b"\n")[0].decode()


def frame_n(frame: bytes) -> int:
    return json.loads(frame.split(b"data: ")[1])["n"]


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["relay", "follow", "declared"])
async def test_a_filtered_sse_stream_sends_sealed_ids_and_resumes_from_them(kind):
    channel = Channel(f"relay-sealed-{kind}", history=20)
    view = filtered_view(kind, channel)
    for n in range(6):
        await channel.publish({"n": n})
    shown = [0, 2, 4] if kind != "declared" else list(range(6))
    reset, *everything = await resume_stream(view, "0", len(shown) + 1)  # only its own ids open: even "0"
    assert reset.startswith(b"event: reset\n") and [frame_n(f) for f in everything] == shown
    tokens = [frame_id(f) for f in everything]
    assert all(ids.parse(t) is None and len(t) == TOKEN_LENGTH for t in tokens)
    assert len(set(tokens)) == len(shown)
    resumed = await resume_stream(view, tokens[0], len(shown) - 1)
    assert [(frame_n(f), frame_id(f)) for f in resumed] == list(zip(shown[1:], tokens[1:], strict=True))
    newest = await channel.newest_id()
    plain = await resume_stream(view, ids.make(epoch(newest), seq(newest) - 1), 2)  # the plain id of "5"
    assert plain[0].startswith(b"event: reset\n") and frame_n(plain[1]) == 0


@pytest.mark.django_db
@pytest.mark.parametrize(("predicate", "missed"), [(None, 8), (even, None)], ids=["plain", "sealed"])
async def test_a_reset_after_drops_counts_them_only_on_an_unfiltered_stream(predicate, missed):
    """The drops of follow()'s queue include messages a predicate would have filtered out: not counted there."""
    from django.test import AsyncRequestFactory

    channel = Channel(f"relay-sealed-drops-{missed}", maxlen=2, history=20)
    view = SSEView()
    view.setup(AsyncRequestFactory().get("/events"))
    view.last_event_id, view.user = None, None
    events = view.follow(channel, predicate=predicate)
    first = asyncio.ensure_future(anext(events))
    await await_until(lambda: channel.subscriber_count == 1, message="follow()'s subscription")
    for n in range(10):
        await channel.publish({"n": n})
    try:
        assert (await first) == {"event": "reset", "data": {"missed": missed, "last_id": None}}
    finally:
        await events.aclose()


@pytest.mark.django_db
async def test_a_filter_declared_public_keeps_the_history_ids():
    channel = Channel("relay-sealed-public", history=20)
    for n in range(3):
        await channel.publish({"n": n})
    newest = await channel.newest_id()
    frames = await resume_stream(filtered_view("public", channel), ids.make(epoch(newest), seq(newest) - 1), 1)
    assert frame_n(frames[0]) == 2 and frame_id(frames[0]) == newest


async def sse_frames(url: str, count: int, headers: dict | None = None) -> list[bytes]:
    """The first ``count`` events of a stream (comments skipped), as raw frames."""
    frames: list[bytes] = []
    buffer = b""
    async with httpx.AsyncClient(timeout=30) as http:
        async with http.stream("GET", url, headers=headers or {}) as stream:
            async for chunk in stream.aiter_bytes():
                buffer += chunk
                while b"\n\n" in buffer:
                    frame, buffer = buffer.split(b"\n\n", 1)
                    if not frame.startswith(b":"):
                        frames.append(frame)
                if len(frames) >= count:
                    return frames[:count]
    return frames


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_a_forwarding_sse_stream_is_relayed_and_sends_the_frames_it_would_as_written(wire, encoding):
    """``yield {"data": message}`` for each message of ``fanout.subscribe()``: no ids, and a
    Last-Event-ID resumes nothing, on the direct path as on the generator beside it."""
    headers = {"Accept-Encoding": encoding, "Last-Event-ID": "0-1"}
    before = await quiet_wire(wire)
    forwarded = asyncio.create_task(sse_frames(f"{wire.url}/api/w/forwarded-events", 200, headers))
    written = asyncio.create_task(sse_frames(f"{wire.url}/api/w/written-out-events", 200, headers))
    now = await wire_subscribers(wire, before["subscribers"] + 2)
    assert now["drains"].get("StreamDrain", 0) == before["drains"].get("StreamDrain", 0) + 1, now["drains"]
    assert now["drains"].get("Reader", 0) == before["drains"].get("Reader", 0) + 1, now["drains"]
    async with websockets.connect(f"{wire.ws_url}/api/w/publish") as publisher:
        await publisher.send(json.dumps({"count": 200, "size": 50, "pause": 0}))
        await publisher.recv()
    by_forwarded, by_written = await forwarded, await written
    assert by_forwarded == by_written
    assert [json.loads(f.removeprefix(b"data: "))["n"] for f in by_forwarded] == list(range(200))
    await wire_subscribers(wire, before["subscribers"])


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_sse_relay_sends_the_same_frames_as_follow_and_resumes_alike(wire, encoding):
    """Unencoded, frames are written directly; through GZipMiddleware they take Django's path."""
    accept = {"Accept-Encoding": encoding}
    before = (await quiet_wire(wire))["subscribers"]
    generic = asyncio.create_task(sse_frames(f"{wire.url}/api/w/fanout-events", 200, accept))
    relay = asyncio.create_task(sse_frames(f"{wire.url}/api/w/relay-events", 200, accept))
    await wire_subscribers(wire, before + 2)
    async with websockets.connect(f"{wire.ws_url}/api/w/publish") as publisher:
        await publisher.send(json.dumps({"count": 200, "size": 50, "pause": 0}))
        await publisher.recv()
    by_generic, by_relay = await generic, await relay
    assert by_relay == by_generic
    assert [json.loads(f.split(b"data: ")[1])["n"] for f in by_relay] == list(range(200))
    # Resuming after an id replays what followed it, from either path, identically.
    last_id = by_relay[-11].split(b"id: ")[1].split(b"\n")[0].decode()
    resumed_generic = await sse_frames(f"{wire.url}/api/w/fanout-events", 10, {**accept, "Last-Event-ID": last_id})
    resumed_relay = await sse_frames(f"{wire.url}/api/w/relay-events", 10, {**accept, "Last-Event-ID": last_id})
    assert resumed_relay == resumed_generic == by_relay[-10:]
