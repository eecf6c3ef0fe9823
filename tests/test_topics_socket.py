"""TopicSocket in process, driven by Channels' communicator with real users and real tokens."""

import asyncio
import gc

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from rest_framework_simplejwt.tokens import AccessToken

from realtime.pubsub.channel import registry
from realtime.topics.presence import COMPANION, memory_presence
from tests.history_ids import ids_of, seq
from tests.topicsapp.routing import Lobby, Sockets
from tests.waiting import asettled

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


@pytest.fixture
def users(db):
    User = get_user_model()
    return {name: User.objects.create_user(name, password="x") for name in ("ana", "bob")}


def token(user):
    return str(AccessToken.for_user(user))


async def opened(path="/ws", subprotocols=("realtime.v1",)):
    communicator = WebsocketCommunicator(Sockets.as_asgi(), path, subprotocols=list(subprotocols))
    accepted, subprotocol = await communicator.connect()
    assert accepted
    return communicator, subprotocol


async def request(communicator, frame):
    await communicator.send_json_to(frame)
    return await communicator.receive_json_from(timeout=5)


async def test_the_subprotocol_is_chosen_and_other_versions_are_refused():
    communicator, subprotocol = await opened()
    assert subprotocol == "realtime.v1"
    await communicator.disconnect()
    communicator, subprotocol = await opened(subprotocols=())
    assert subprotocol is None
    assert (await request(communicator, {"op": "ping", "ref": "1"}))["ok"] is True
    await communicator.disconnect()
    communicator = WebsocketCommunicator(Sockets.as_asgi(), "/ws", subprotocols=["realtime.v2"])
    await communicator.connect()
    closed = await communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 1008, "reason": "Subprotocol 'realtime.v1' required"}


async def test_connect_authenticates_and_joins_the_server_side_channels(users):
    ana = users["ana"]
    communicator, _ = await opened()
    answer = await request(communicator, {"op": "connect", "ref": "c", "token": token(ana)})
    assert answer["ok"] and answer["data"]["user"] == ana.pk and answer["data"]["v"] == 1
    assert answer["data"]["channels"] == [f"user:{ana.pk}"]
    await Sockets.topics[-1].publish({"note": "for ana"}, pk=ana.pk)
    message = await communicator.receive_json_from(timeout=5)
    assert message == {"op": "message", "channel": f"user:{ana.pk}", "id": None, "data": {"note": "for ana"}}
    again = await request(communicator, {"op": "connect", "ref": "d", "token": token(ana)})
    assert again["error"]["code"] == "bad_request"
    await communicator.disconnect()


async def test_a_refused_token_is_an_error_reply_and_the_connection_stays_anonymous(users):
    communicator, _ = await opened()
    answer = await request(communicator, {"op": "connect", "ref": "c", "token": "not.a.jwt"})
    assert answer["error"]["code"] == "token_not_valid"
    denied = await request(communicator, {"op": "subscribe", "ref": "s", "channel": f"owned:{users['ana'].pk}"})
    assert denied["error"]["code"] == "forbidden"
    assert (await request(communicator, {"op": "subscribe", "ref": "o", "channel": "open:x"}))["ok"]
    await communicator.disconnect()


async def test_a_denied_channel_leaves_the_others_working(users):
    ana, bob = users["ana"], users["bob"]
    communicator, _ = await opened()
    await request(communicator, {"op": "connect", "ref": "c", "token": token(ana)})
    own = await request(communicator, {"op": "subscribe", "ref": "1", "channel": f"owned:{ana.pk}"})
    assert own["ok"]
    other = await request(communicator, {"op": "subscribe", "ref": "2", "channel": f"owned:{bob.pk}"})
    assert other["error"] == {"code": "forbidden", "detail": "You are not the owner"}
    assert (await request(communicator, {"op": "subscribe", "ref": "3", "channel": "open:a"}))["ok"]
    await Sockets.topics[1].publish("mine", pk=ana.pk)
    assert (await communicator.receive_json_from(timeout=5))["channel"] == f"owned:{ana.pk}"
    published = await request(communicator, {"op": "publish", "ref": "4", "channel": "open:a", "data": [1]})
    message_id = published["data"]["id"]
    assert published == {"op": "reply", "ref": "4", "ok": True, "data": {"id": message_id}} and seq(message_id) == 1
    assert await communicator.receive_json_from(timeout=5) == {
        "op": "message", "channel": "open:a", "id": message_id, "data": [1],
    }
    await communicator.disconnect()


async def test_topic_hooks_refuse_or_fail_one_request_only():
    communicator, _ = await opened()
    assert (await request(communicator, {"op": "subscribe", "ref": "1", "channel": "picky"}))["ok"]
    refused = await request(communicator, {"op": "publish", "ref": "2", "channel": "picky", "data": "no"})
    assert refused["error"] == {"code": "refused", "detail": "Only 'ok' is accepted"}
    failed = await request(communicator, {"op": "publish", "ref": "3", "channel": "picky", "data": "boom"})
    assert failed["error"]["code"] == "internal_error"
    assert (await request(communicator, {"op": "publish", "ref": "4", "channel": "picky", "data": "ok"}))["ok"]
    assert (await communicator.receive_json_from(timeout=5))["data"] == "ok"
    anonymous = await request(communicator, {"op": "subscribe", "ref": "5", "channel": "lobby:hall"})
    assert anonymous["ok"]
    said = await request(communicator, {"op": "publish", "ref": "6", "channel": "lobby:hall", "data": "hi"})
    assert said["error"] == {"code": "refused", "detail": "Log in to talk"}
    await communicator.disconnect()


async def test_resume_replays_after_last_id_and_reports_what_history_cannot_reach():
    name = "open:resume"
    for i in range(60):  # history = 50
        await Sockets.topics[0].publish({"n": i}, name)
    id_ = await ids_of(Sockets.topics[0].channel(name))
    communicator, _ = await opened()
    answer = await request(communicator, {"op": "subscribe", "ref": "1", "channel": name, "last_id": id_(55)})
    assert answer["data"] == {"channel": name, "recovered": True, "last_id": id_(60)}
    replay = [await communicator.receive_json_from(timeout=5) for _ in range(5)]
    assert [m["data"]["n"] for m in replay] == [55, 56, 57, 58, 59]
    await request(communicator, {"op": "unsubscribe", "ref": "2", "channel": name})
    answer = await request(communicator, {"op": "subscribe", "ref": "3", "channel": name, "last_id": id_(2)})
    assert answer["data"]["recovered"] is False
    assert await communicator.receive_json_from(timeout=5) == {
        "op": "gap", "channel": name, "missed": None, "recovered": False,
    }
    await communicator.disconnect()


async def test_resumes_are_counted_in_the_history_metrics_as_sse_resumes_are():
    from realtime.ops.stats import stats

    name = "open:resume-metrics"
    for i in range(60):  # history = 50
        await Sockets.topics[0].publish({"n": i}, name)
    id_ = await ids_of(Sockets.topics[0].channel(name))
    before = (stats.replays, stats.replayed, stats.resets)
    communicator, _ = await opened()
    answer = await request(communicator, {"op": "subscribe", "ref": "1", "channel": name, "last_id": id_(57)})
    assert answer["data"]["recovered"] is True
    assert [(await communicator.receive_json_from(timeout=5))["data"]["n"] for _ in range(3)] == [57, 58, 59]
    await request(communicator, {"op": "unsubscribe", "ref": "2", "channel": name})
    answer = await request(communicator, {"op": "subscribe", "ref": "3", "channel": name, "last_id": id_(2)})
    assert answer["data"]["recovered"] is False
    await request(communicator, {"op": "subscribe", "ref": "4", "channel": "open:fresh"})  # no last_id: no resume
    await communicator.disconnect()
    after = (stats.replays, stats.replayed, stats.resets)
    replays, replayed, resets = (now - then for now, then in zip(after, before, strict=True))
    assert (replays, resets) == (2, 1)
    assert replayed == 3 + 50  # the second resume replays what history still holds, after its gap


async def test_a_slow_subscription_gets_a_gap_with_the_number_dropped():
    communicator, _ = await opened()
    await request(communicator, {"op": "subscribe", "ref": "1", "channel": "lobby:slow"})
    channel = Lobby.channel("lobby:slow")
    sink = channel.subscribers[0]
    sink.held = True  # hold deliveries, as a client whose buffer is full holds its sends
    for i in range(Lobby.maxlen + 7):
        await channel.publish({"i": i})
    sink.activate()
    assert await communicator.receive_json_from(timeout=5) == {"op": "gap", "channel": "lobby:slow", "missed": 7}
    first = await communicator.receive_json_from(timeout=5)
    assert first["data"] == {"i": 7}
    await communicator.disconnect()


async def test_presence_one_member_per_user_join_and_leave_once(users):
    ana = users["ana"]
    watcher, _ = await opened()
    await request(watcher, {"op": "subscribe", "ref": "w", "channel": "lobby:tabs"})
    tabs = []
    for _ in range(2):
        tab, _ = await opened()
        await request(tab, {"op": "connect", "ref": "c", "token": token(ana)})
        await request(tab, {"op": "subscribe", "ref": "s", "channel": "lobby:tabs"})
        tabs.append(tab)
    join = await watcher.receive_json_from(timeout=5)
    assert join == {"op": "join", "channel": "lobby:tabs", "member": {"id": ana.pk, "info": {"name": "ana"},
                                                                       "connections": 1}}
    members = await request(watcher, {"op": "presence", "ref": "p", "channel": "lobby:tabs"})
    assert members["data"]["members"] == [{"id": ana.pk, "info": {"name": "ana"}, "connections": 2}]
    assert await Lobby.members(name="tabs") == members["data"]["members"]
    await tabs[0].disconnect()
    assert await watcher.receive_nothing(timeout=0.3)
    await tabs[1].disconnect()
    leave = await watcher.receive_json_from(timeout=5)
    assert leave["op"] == "leave" and leave["member"]["id"] == ana.pk and leave["member"]["connections"] == 0
    assert await Lobby.members(name="tabs") == []
    await watcher.disconnect()


async def test_nothing_outlives_its_connection_after_1000_cycles(users):
    ana = users["ana"]
    raw = token(ana)
    await asyncio.sleep(0)
    tasks_before = len(asyncio.all_tasks())
    channels_before = set(registry)
    for i in range(1000):
        communicator, _ = await opened()
        await request(communicator, {"op": "connect", "ref": "c", "token": raw})
        names = ("lobby:cycle", f"open:cycle-{i}", "picky")
        for channel in names:
            await communicator.send_json_to({"op": "subscribe", "ref": channel, "channel": channel})
        frames = [await communicator.receive_json_from(timeout=5) for _ in range(len(names) + 1)]
        assert sorted(f["op"] for f in frames) == ["join", "reply", "reply", "reply"]  # + ana's own join
        assert all(f["ok"] for f in frames if f["op"] == "reply")
        await communicator.disconnect()
    await asettled(lambda: len(asyncio.all_tasks()), lambda n: n <= tasks_before, 5)
    gc.collect()
    assert len(asyncio.all_tasks()) <= tasks_before
    assert memory_presence.entries() == 0
    assert await Lobby.members(name="cycle") == []
    for name in ("lobby:cycle", COMPANION + "lobby:cycle", "picky", f"user:{ana.pk}"):
        channel = registry.get(name)
        assert channel is None or channel.subscriber_count == 0, channel
    # Channels without history are forgotten once unused; history ones (open:*) keep their messages.
    assert not {"picky", f"user:{ana.pk}", COMPANION + "lobby:cycle"} & (set(registry) - channels_before)


async def test_a_client_silent_after_opening_is_closed_with_1008():
    class Impatient(Sockets):
        first_message_timeout = 0.2

    communicator = WebsocketCommunicator(Impatient.as_asgi(), "/ws")
    assert (await communicator.connect())[0]
    closed = await communicator.receive_output(timeout=5)
    assert (closed["type"], closed["code"]) == ("websocket.close", 1008)


async def test_redis_unreachable_is_a_broker_unavailable_reply_and_the_socket_goes_on(users, settings):
    from tests.servers import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    communicator, _ = await opened()
    await request(communicator, {"op": "connect", "ref": "c", "token": token(users["ana"])})
    answer = await request(communicator, {"op": "subscribe", "ref": "1", "channel": "lobby:down"})
    assert answer["error"]["code"] == "broker_unavailable"
    assert (await request(communicator, {"op": "subscribe", "ref": "2", "channel": "picky"}))["ok"]
    await communicator.disconnect()
    assert registry.get("lobby:down") is None or registry["lobby:down"].subscriber_count == 0


async def test_the_machine_keeps_the_one_record_of_the_subscriptions(users, settings):
    """Refused, failed and ended subscribes leave nothing in the machine; the socket holds only handles."""
    from tests.servers import free_port

    sockets = []

    class Recorded(Sockets):
        async def on_connect(self, ws, **params):
            sockets.append(self)
            await super().on_connect(ws, **params)

    communicator = WebsocketCommunicator(Recorded.as_asgi(), "/ws", subprotocols=["realtime.v1"])
    assert (await communicator.connect())[0]
    await request(communicator, {"op": "connect", "ref": "c", "token": token(users["ana"])})
    socket = sockets[0]
    assert (await request(communicator, {"op": "subscribe", "ref": "1", "channel": f"owned:{users['bob'].pk}"}))[
        "error"]["code"] == "forbidden"
    assert (await request(communicator, {"op": "subscribe", "ref": "2", "channel": "picky"}))["ok"]
    assert (await request(communicator, {"op": "subscribe", "ref": "3", "channel": "open:record"}))["ok"]
    assert (await request(communicator, {"op": "unsubscribe", "ref": "4", "channel": "picky"}))["ok"]
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there: presence fails
    assert (await request(communicator, {"op": "subscribe", "ref": "5", "channel": "lobby:record"}))["error"][
        "code"] == "broker_unavailable"
    joined = {name: sub.state.value for name, sub in socket.protocol.subscriptions.items()}
    assert joined == {f"user:{users['ana'].pk}": "joined", "open:record": "joined"}
    assert set(socket.handles) == set(joined)
    await communicator.disconnect()
    assert socket.protocol.subscriptions == {} and socket.handles == {}
    assert socket.protocol.state.value == "closing"


# -- delivery units: the frames of a published message, and the direct path --------------------


async def test_a_message_republished_on_another_channel_gets_that_channel_s_envelope():
    """The envelope cached on a SharedMessage is keyed by channel and id: a subscriber may publish
    what it received on another channel, the same object, and must not resend the first envelope."""
    from realtime import Channel
    from realtime.topics.delivery import message_event

    first, second = Channel("unit-repub-a", history=5), Channel("unit-repub-b")
    queue = await first.subscribe_queue()
    try:
        await first.publish({"k": 1})
        shared = queue.get_nowait()
        assert message_event("unit-repub-a", "1", shared)["text"] == (
            '{"op":"message","channel":"unit-repub-a","id":"1","data":{"k":1}}'
        )
        await second.publish(shared)
        assert message_event("unit-repub-b", None, shared)["text"] == (
            '{"op":"message","channel":"unit-repub-b","id":null,"data":{"k":1}}'
        )
        again = message_event("unit-repub-b", None, shared)
        assert again is message_event("unit-repub-b", None, shared)  # still built once per channel
    finally:
        await first.unsubscribe_queue(queue)


class FakeWriter:
    """A direct writer whose transport has room until ``paused``; records each write and the frames in it
    (the frames of one loop turn go in one write, ``realtime.pubsub.delivery.WriteBatch``)."""

    def __init__(self):
        self.frames = []
        self.writes = []
        self.paused = False

    def ready(self):
        return not self.paused

    def write(self, data):
        self.writes.append(data)
        while data:
            assert data[1] < 126  # the tests' frames are short
            self.frames.append(data[: 2 + data[1]])
            data = data[2 + data[1]:]


class FakeSocket:
    sent = 0


def payload(frame: bytes):
    """The JSON of a small server text frame."""
    import json

    assert frame[0] == 0x81 and frame[1] < 126
    return json.loads(frame[2:])


async def ready_sinks(channel, count, monkeypatch):
    """``count`` connections on ``channel``, each with a ready fake writer; and the sinks scheduled."""
    from realtime.topics.delivery import ChannelSink, Outbox

    scheduled = []
    schedule = Outbox.schedule
    monkeypatch.setattr(Outbox, "schedule", lambda self, sink: (scheduled.append(sink), schedule(self, sink)))
    sinks = []
    for _ in range(count):
        sink = ChannelSink(Outbox(None, FakeWriter(), FakeSocket()), channel.name, 5)
        channel.attach(sink)
        sink.activate()
        sinks.append(sink)
    return sinks, scheduled


async def test_a_publish_to_ready_subscribers_is_written_once_built_and_wakes_no_task(monkeypatch):
    from realtime import Channel

    channel = Channel("unit-direct", history=10)
    sinks, scheduled = await ready_sinks(channel, 200, monkeypatch)
    try:
        tasks = len(asyncio.all_tasks())
        for i in range(5):
            await channel.publish({"i": i})
        assert scheduled == [] and len(asyncio.all_tasks()) == tasks
        await asyncio.sleep(0)  # the turn ends: each connection's frames are written
        assert scheduled == [] and len(asyncio.all_tasks()) == tasks
        assert all(not sink.items and not sink.outbox.ready_sinks for sink in sinks)
        frames = sinks[0].outbox.writer.frames
        id_ = await ids_of(channel)
        assert [payload(f) for f in frames] == [
            {"op": "message", "channel": "unit-direct", "id": id_(i + 1), "data": {"i": i}} for i in range(5)
        ]
        for sink in sinks:  # the turn's first frame at once (the same bytes object for every socket), its
            # four others in one write per socket
            writes = sink.outbox.writer.writes
            assert writes[0] is sinks[0].outbox.writer.writes[0] and len(writes) == 2
            assert writes == sinks[0].outbox.writer.writes
            assert sink.outbox.ws.sent == sink.outbox.direct == 5

        # A transport that pushes back: that one socket's message is queued, and its outbox woken.
        sinks[0].outbox.writer.paused = True
        await channel.publish({"i": 5})
        await asyncio.sleep(0)
        assert scheduled == [sinks[0]] and [m for m, _ in sinks[0].items] == [id_(6)]
        last = sinks[1].outbox.writer.writes[-1]  # one frame in a turn: the same bytes object for every socket
        assert all(sink.outbox.writer.writes[-1] is last for sink in sinks[1:])
        assert len(sinks[1].outbox.writer.frames) == 6
        # Its room back, it still queues while anything is queued (no overtaking), and drops count.
        sinks[0].outbox.writer.paused = False
        for i in range(6, 12):
            await channel.publish({"i": i})
        assert [m for m, _ in sinks[0].items] == [id_(n) for n in range(8, 13)] and sinks[0].dropped == 2
        await asyncio.sleep(0)
        assert payload(sinks[1].outbox.writer.frames[-1])["data"] == {"i": 11}  # the others: direct
    finally:
        for sink in sinks:
            channel.detach(sink)


async def test_nothing_goes_direct_while_another_channel_of_the_connection_has_frames_queued(monkeypatch):
    """The outbox is round-robin over sinks: a direct write must not overtake a frame queued on the
    same connection for another channel."""
    from realtime import Channel
    from realtime.topics.delivery import ChannelSink, Outbox

    a, b = Channel("unit-order-a"), Channel("unit-order-b")
    sent = []

    async def send(event):
        sent.append(event["text"])

    outbox = Outbox(send, FakeWriter(), FakeSocket())
    sink_a, sink_b = ChannelSink(outbox, a.name, 5), ChannelSink(outbox, b.name, 5)
    for channel, sink in ((a, sink_a), (b, sink_b)):
        channel.attach(sink)
        sink.activate()
    task = asyncio.create_task(outbox.run())
    try:
        outbox.writer.paused = True
        await a.publish("a0")
        outbox.writer.paused = False
        await b.publish("b0")  # the writer is ready, but a0 is queued: b0 waits behind it
        assert outbox.writer.frames == [] and sink_b.items
        await a.publish("a1")
        for _ in range(5):
            await asyncio.sleep(0)
        assert [s.split('"data":')[1] for s in sent] == ['"a0"}', '"b0"}', '"a1"}']
        assert not outbox.ready_sinks and not outbox.sending
        await b.publish("b1")  # all sent: direct again
        await asyncio.sleep(0)
        assert [payload(f)["data"] for f in outbox.writer.frames] == ["b1"] and len(sent) == 3
        # The connection's own publish holds the direct path until its reply is out.
        outbox.held += 1
        await b.publish("b2")
        assert len(outbox.writer.frames) == 1 and sink_b.items
        outbox.held -= 1
        for _ in range(5):
            await asyncio.sleep(0)
        assert sent[-1].endswith('"data":"b2"}')
    finally:
        task.cancel()
        a.detach(sink_a)
        b.detach(sink_b)


async def test_the_direct_path_skips_replayed_ids_once_and_sends_presence_frames(monkeypatch):
    from realtime import Channel
    from realtime.topics.delivery import PRESENCE

    channel = Channel("unit-seam", history=10)
    await channel.publish({"i": -1})  # before anyone subscribes: its id shows the channel's epoch
    id_ = await ids_of(channel)
    sinks, scheduled = await ready_sinks(channel, 1, monkeypatch)
    sink = sinks[0]
    try:
        sink.skip = {id_(2), id_(3)}  # the replay sent 2 and 3; their live copies arrive after
        await channel.publish({"i": 0})
        await channel.publish({"i": 1})
        sink.offer({"op": "join", "channel": "unit-seam", "member": {"id": 1}}, PRESENCE)
        await channel.publish({"i": 2})
        await asyncio.sleep(0)
        frames = [payload(f) for f in sink.outbox.writer.frames]
        assert [f.get("id", f["op"]) for f in frames] == ["join", id_(4)] and not sink.skip
        assert scheduled == []
    finally:
        channel.detach(sink)
