"""The one delivery engine (realtime.pubsub.delivery) with fake writers and drains: no server."""

from __future__ import annotations

import asyncio
import gc
import json

import pytest

from realtime import Channel
from realtime.encoding import SharedMessage
from realtime.frames import BINARY, TEXT, frame, json_frame, text_frame
from realtime.pubsub.delivery import UNORDERED, DeliveryQueue, Listener, Reader, Seam


class FakeWriter:
    """Records each write, and the frames in it (one write may carry several: ``WriteBatch``)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.writes: list[bytes] = []
        self.paused = False

    def ready(self) -> bool:
        return not self.paused

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        while data:
            assert data[1] < 126  # the tests' frames are short
            self.frames.append(data[: 2 + data[1]])
            data = data[2 + data[1]:]


class Counter:
    sent = 0


class FakeDrain:
    """A connection: its writer, whether it is idle, and the queues it was asked to send."""

    def __init__(self, writer: FakeWriter | None = None) -> None:
        self.writer = writer
        self.idle = True
        self.direct = 0
        self.counter = Counter()
        self.woken: list[DeliveryQueue] = []
        self.failures: list[DeliveryQueue] = []

    def wake(self, queue: DeliveryQueue) -> None:
        self.woken.append(queue)

    def failed(self, queue: DeliveryQueue) -> None:
        self.failures.append(queue)


def encode(message, message_id):
    return json_frame({"id": message_id, "m": message})


def payload(data: bytes) -> dict:
    assert data[0] == 0x81 and data[1] < 126
    return json.loads(data[2:])


@pytest.mark.parametrize(
    ("size", "header"),
    [(0, b"\x81\x00"), (125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e"), (65535, b"\x81\x7e\xff\xff"),
     (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00")],
)
def test_frames_use_the_shortest_length_form(size, header):
    data = frame(TEXT, b"x" * size)
    assert data[: len(header)] == header and len(data) == len(header) + size


def test_text_and_binary_frames_carry_their_opcode():
    assert text_frame("é") == b"\x81\x02" + "é".encode()
    assert frame(BINARY, b"\x00")[0] == 0x82


def test_a_shared_message_is_encoded_once_per_encoder_and_id():
    calls = []

    def encoder(message, message_id):
        calls.append(message_id)
        return f"{message_id}:{message['a']}"

    def other(message, message_id):
        return "other"

    shared = SharedMessage({"a": 1})
    assert shared.encoded(encoder, "1") == shared.encoded(encoder, "1") == "1:1"
    assert shared.encoded(other, "1") == "other"
    assert shared.encoded(encoder, "2") == "2:1"  # republished with a new id: a new frame
    assert shared.encoded(encoder, "1") == "1:1" and calls == ["1", "2"]
    assert json_frame(shared) is json_frame(shared)


async def test_ready_writers_get_the_frame_directly_and_nothing_is_queued():
    writer, drain = FakeWriter(), FakeDrain()
    drain.writer = writer
    queue = DeliveryQueue(drain, 3, encode)
    for i in range(5):
        queue.offer(i, str(i))
    assert [payload(f)["m"] for f in writer.frames] == [0]  # the turn's first frame: at once
    await asyncio.sleep(0)
    assert [payload(f)["m"] for f in writer.frames] == [0, 1, 2, 3, 4]
    assert len(writer.writes) == 2  # the turn's four others in one write, at its end
    assert not queue.items and drain.woken == [] and drain.direct == drain.counter.sent == 5


async def test_frames_of_one_turn_go_in_one_write_per_connection_and_an_unsubscribed_ones_are_dropped():
    """Two connections, two queues on the first: each connection gets its first frame at once and the
    turn's others in one write, in publish order; a queue closed before the end of the turn (an
    unsubscribe) loses its frames."""
    first, second = FakeWriter(), FakeWriter()
    a, b = FakeDrain(first), FakeDrain(second)
    q1, q2, q3 = DeliveryQueue(a, 5, encode), DeliveryQueue(a, 5, encode), DeliveryQueue(b, 5, encode)
    for n in range(3):
        q1.offer(f"x{n}", f"1-{n}")
        q2.offer(f"y{n}", f"2-{n}")
        q3.offer(f"z{n}", f"3-{n}")
    gone = DeliveryQueue(b, 5, encode)
    gone.offer("unsubscribed", "9")  # after z0: kept for the turn's second write
    gone.closed = True  # as Outbox.forget does
    await asyncio.sleep(0)
    assert [payload(f)["m"] for f in first.frames] == ["x0", "y0", "x1", "y1", "x2", "y2"]
    assert [payload(f)["m"] for f in second.frames] == ["z0", "z1", "z2"]
    assert len(first.writes) == len(second.writes) == 2
    assert a.direct == a.counter.sent == 6 and b.direct == 3


async def test_frames_taken_for_a_connection_whose_transport_filled_meanwhile_go_back_to_their_queue():
    """The room is checked when a turn's frames are taken and again at their write: those that find none
    go back, in order and before anything queued after them, to the drain (drop-oldest past maxlen)."""
    writer = FakeWriter()
    drain = FakeDrain(writer)
    queue = DeliveryQueue(drain, 3, encode)
    for n in range(5):
        queue.offer(n, str(n))  # 0 at once; 1 to 4 for the turn's second write
    writer.paused = True  # another write of the connection filled its buffer
    queue.offer(5, "5")  # joins the turn's batch: nothing overtakes 1 to 4
    await asyncio.sleep(0)
    assert [payload(f)["m"] for f in writer.frames] == [0] and drain.woken == [queue]
    assert [m for _, m in queue.items] == [3, 4, 5] and queue.missed() == 2
    assert drain.direct == drain.counter.sent == 1


async def test_an_asgi_send_never_overtakes_the_turns_direct_frames():
    """``SendGuard.send`` writes the pending direct frames first: a reply after a publish comes after it."""
    from realtime.flow import SendGuard

    writer = FakeWriter()
    queue = DeliveryQueue(FakeDrain(writer), 5, encode)
    order = []

    async def server_send(message):
        order.append(("asgi", len(writer.frames)))

    guard = SendGuard({"type": "websocket"}, server_send)
    queue.offer("published first", "1")  # written at once
    queue.offer("published second", "2")  # kept for the turn's end
    await guard.send({"type": "websocket.send", "text": "the reply"})
    assert order == [("asgi", 2)]


async def test_backpressure_queues_keeps_order_drops_oldest_and_reports_the_gap_once():
    writer = FakeWriter()
    drain = FakeDrain(writer)
    queue = DeliveryQueue(drain, 3, encode)
    writer.paused = True
    for i in range(5):
        queue.offer(i, str(i))
    assert [m for _, m in queue.items] == [2, 3, 4] and queue.dropped == 2
    assert drain.woken == [queue] * 5
    writer.paused = False
    queue.offer(5, "5")  # room again, but messages are queued: no overtaking
    assert writer.frames == [] and [m for _, m in queue.items] == [3, 4, 5] and queue.dropped == 3
    assert queue.missed() == 3 and queue.missed() == 0
    assert [queue.take(), queue.take(), queue.take(), queue.take()] == [("3", 3), ("4", 4), ("5", 5), None]
    queue.offer(6, "6")  # drained and reported: direct again
    await asyncio.sleep(0)
    assert [payload(f)["m"] for f in writer.frames] == [6]


async def test_an_unreported_gap_or_a_busy_connection_holds_the_direct_path():
    writer = FakeWriter()
    drain = FakeDrain(writer)
    queue = DeliveryQueue(drain, 1, encode)
    writer.paused = True
    queue.offer(0, "0")
    queue.offer(1, "1")
    writer.paused = False
    assert queue.take() == ("1", 1)
    queue.offer(2, "2")  # the drop of 0 is not reported yet: queued behind the gap
    assert writer.frames == [] and queue.missed() == 1 and queue.take() == ("2", 2)
    drain.idle = False  # another queue of the connection is being sent
    queue.offer(3, "3")
    assert writer.frames == [] and queue.take() == ("3", 3)


async def test_order_is_kept_across_the_channels_of_one_connection():
    """Two queues share one drain: while one has frames queued the drain is not idle, so the other waits."""
    writer = FakeWriter()

    class Connection(FakeDrain):
        def wake(self, queue):
            super().wake(queue)
            self.idle = False

    drain = Connection(writer)
    a, b = DeliveryQueue(drain, 5, encode), DeliveryQueue(drain, 5, encode)
    writer.paused = True
    a.offer("a0", "1")
    writer.paused = False
    b.offer("b0", "1")
    assert writer.frames == [] and b.items and drain.woken == [a, b]


async def test_a_held_queue_neither_writes_nor_wakes_until_released_and_skips_replayed_ids_once():
    writer = FakeWriter()
    drain = FakeDrain(writer)
    queue = DeliveryQueue(drain, 5, encode, held=True)
    queue.offer("m1", "1")
    queue.offer("presence", UNORDERED)
    queue.offer("m2", "2")
    assert writer.frames == [] and drain.woken == []
    queue.release(skip={"1"})  # the replay sent id 1
    assert drain.woken == [queue]
    assert [queue.take(), queue.take(), queue.take()] == [(UNORDERED, "presence"), ("2", "m2"), None]
    assert queue.skip is None  # past the seam
    queue.offer("m1 again", "1")  # ids are not remembered for ever: the seam was passed
    await asyncio.sleep(0)
    assert payload(writer.frames[-1])["m"] == "m1 again"


async def test_a_new_message_before_the_drain_takes_the_queue_does_not_let_a_replayed_copy_through():
    drain = FakeDrain(FakeWriter())
    queue = DeliveryQueue(drain, 5, encode, held=True)
    queue.offer("m1", "1")  # its live copy, queued while the replay sent it
    queue.release(skip={"1"})
    queue.offer("m2", "2")  # arrives before the drain's turn
    assert [queue.take(), queue.take()] == [("2", "m2"), None]


async def test_a_seam_after_a_snapshot_drops_every_live_copy_up_to_the_snapshots_id():
    drain = FakeDrain(FakeWriter())
    queue = DeliveryQueue(drain, 5, encode, held=True)
    for n in (4, 5, 6):
        queue.offer(f"m{n}", f"9-{n}")
    queue.release(skip=Seam(["9-6"], "9-5"))  # the snapshot holds up to 9-5, the replay sent 9-6
    queue.offer("m7", "9-7")
    assert [queue.take(), queue.take()] == [("9-7", "m7"), None]


async def test_a_transform_filters_and_one_that_raises_closes_the_queue_and_tells_the_drain():
    channel = Channel()
    writer = FakeWriter()
    drain = FakeDrain(writer)

    def transform(message):
        if message == "boom":
            raise RuntimeError("bug")
        return None if message == "skip" else message.upper()

    queue = DeliveryQueue(drain, 5, encode, channel=channel, transform=transform)
    channel.attach(queue)
    await channel.publish("a")
    await channel.publish("skip")
    await channel.publish("boom")
    await channel.publish("b")
    assert [payload(f)["m"] for f in writer.frames] == ["A"]
    assert drain.failures == [queue] and queue.closed and not channel.is_attached(queue)


async def test_close_detaches_and_drops_everything_pending():
    channel = Channel("delivery-close")
    drain = FakeDrain()
    queue = DeliveryQueue(drain, 5, encode, channel=channel)
    channel.attach(queue)
    await channel.publish("x")
    assert queue.qsize() == 1
    queue.close()
    queue.close()
    await channel.publish("y")
    assert queue.empty() and channel.subscriber_count == 0 and not queue.pending


async def test_a_reader_parks_on_one_future_and_wakes_on_offer():
    reader = Reader()
    queue = DeliveryQueue(reader, 5)
    waiting = asyncio.create_task(reader.wait())
    await asyncio.sleep(0)
    queue.offer("x", None)
    await asyncio.wait_for(waiting, 1)
    assert queue.take() == (None, "x") and reader.waiter is None
    with pytest.raises(TimeoutError):
        await reader.wait(0.01)
    assert reader.waiter is None


async def test_a_listener_is_called_in_the_publishers_turn():
    channel = Channel()
    seen = []
    listener = Listener(lambda message, message_id: seen.append(message))
    channel.attach(listener)
    assert await channel.publish({"a": 1}) == 1
    assert seen == [{"a": 1}]
    channel.detach(listener)


async def test_a_broken_subscription_iterator_leaves_nothing_attached():
    channel = Channel("delivery-iter")
    subscription = channel.subscribe()
    task = asyncio.create_task(anext(subscription))
    while channel.subscriber_count == 0:
        await asyncio.sleep(0)
    await channel.publish("x")
    assert await task == "x"
    del subscription, task
    gc.collect()
    assert channel.subscriber_count == 0


async def test_a_relay_writes_directly_then_drains_through_asgi_in_order_with_the_gap_notice():
    from realtime.relay import Relay

    sent = []

    class Socket:
        sent = 0

        async def send_json(self, data):
            sent.append(data)

    channel = Channel("delivery-relay", maxlen=2)
    writer = FakeWriter()
    tasks = []

    def spawn(coroutine):
        task = asyncio.create_task(coroutine)
        tasks.append(task)
        return task

    relay = Relay(Socket(), writer, channel, "json", transform=None, gap=lambda n: {"missed": n}, spawn=spawn,
                  name="View")
    await channel.publish({"n": 0})
    await asyncio.sleep(0)  # the turn ends: its direct frame is written
    writer.paused = True
    for n in range(1, 5):
        await channel.publish({"n": n})  # 1, 2 dropped for 3, 4 (maxlen 2)
    writer.paused = False
    await asyncio.wait_for(tasks[0], 1)
    assert [payload(f) for f in writer.frames] == [{"n": 0}]
    assert sent == [{"missed": 2}, {"n": 3}, {"n": 4}] and len(tasks) == 1
    await channel.publish({"n": 5})  # the drain task has ended: direct again
    await asyncio.sleep(0)
    assert payload(writer.frames[-1]) == {"n": 5} and relay.idle
    relay.close()
    assert channel.subscriber_count == 0
