"""NATS as the broker, on a nats-server of our own (JetStream on, its own store): the channel layer on core
subjects, history on JetStream, the system checks, and two daphne processes with ``NATS_URL`` only.

A publish crosses processes, a resume crosses processes, and after SIGKILL and a restart of the
nats-server every publish reaches every subscriber in both processes while a resume is complete or
says ``reset``. Presence is one member per user on NATS KV, a killed process's members reaped once.
Never the machine's 4222.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest
import websockets

from realtime.pubsub.channel import group_name
from realtime.topics.presence import COMPANION
from tests.nats_server import NatsServer
from tests.servers import Daphne, prepare_database
from tests.sse_client import read_events
from tests.test_channel_redis import (
    follow,
    primed_followers,
    publish_via,
    receive,
    subscribed,
    two_entries_followed,
)
from tests.test_checks import found
from tests.test_redis_cluster import resume_until
from tests.test_topics_live import member_socket, opened, request, until
from tests.waiting import asettled, await_until, live_stats, quiet_live

pytestmark = pytest.mark.timeout(180)

NATS_LAYER = {"default": {"BACKEND": "realtime.pubsub.nats.NatsChannelLayer"}}
REDIS_LAYER = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                           "CONFIG": {"hosts": ["redis://127.0.0.1:6379/3"]}}}


@pytest.fixture(scope="module")
def nats(tmp_path_factory):
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture
async def on_nats(nats, settings):
    """``settings.NATS_URL`` is our server for the test; this loop's connection is closed after it."""
    from realtime.pubsub.nats import close_clients

    settings.NATS_URL = nats.url
    yield nats
    await close_clients()


@pytest.fixture(scope="module")
def servers(nats, tmp_path_factory, output_dir):
    tmp = tmp_path_factory.mktemp("nats-daphne")
    env, users = prepare_database(tmp, {"NATS_URL": nats.url})
    env = {**env, "DJANGO_SETTINGS_MODULE": "tests.topics_settings", "TEST_PRESENCE_TIMEOUT": "3"}
    daphnes = [Daphne(env, output_dir / f"daphne-nats-{name}.log").start() for name in "ab"]
    yield daphnes, users
    for server in daphnes:
        server.stop()


def stream_consumers(nats, stream):
    """The consumers the server holds on ``stream`` (from its monitoring endpoint)."""
    import urllib.request

    url = f"http://127.0.0.1:{nats.monitor_port}/jsz?streams=true&consumers=true"
    with urllib.request.urlopen(url, timeout=5) as answer:
        data = json.loads(answer.read())
    for account in data.get("account_details") or ():
        for detail in account.get("stream_detail") or ():
            if detail["name"] == stream:
                return len(detail.get("consumer_detail") or ())
    return 0


# -- the channel layer ---------------------------------------------------------------------------------


async def test_the_layer_keeps_one_subscription_per_group_and_process_and_counts_what_it_drops(on_nats, caplog):
    from realtime.pubsub.nats import NatsChannelLayer, figures

    nats = on_nats
    sender, receiver = NatsChannelLayer(hosts=[nats.url]), NatsChannelLayer(hosts=[nats.url], capacity=2)
    try:
        members = [await receiver.new_channel() for _ in range(3)]
        for name in members:
            await receiver.group_add("room.one", name)
        subject = receiver.group_address("room.one")
        assert subject == "asgi.g.room~one"  # one token: not a sub-subject of "room"
        assert await asyncio.to_thread(nats.subscribers, subject) == 1
        await sender.group_send("room.one", {"type": "chat", "n": 1})
        for name in members:
            assert await asyncio.wait_for(receiver.receive(name), 5) == {"type": "chat", "n": 1}
        # another group whose name the first's starts with hears nothing of it
        other = await receiver.new_channel()
        await receiver.group_add("room", other)
        await sender.group_send("room.one", {"type": "chat", "n": 2})
        for name in members:
            assert (await asyncio.wait_for(receiver.receive(name), 5))["n"] == 2
        assert receiver.queues[other].empty()
        # a send to a channel of another process goes through that process's inbox subject
        await sender.send(members[0], {"type": "direct"})
        assert await asyncio.wait_for(receiver.receive(members[0]), 5) == {"type": "direct"}
        # past capacity (2) a member's message is dropped: counted, logged, in the figures
        before = figures()["undelivered"]
        for n in range(3):
            await sender.group_send("room.one", {"type": "chat", "n": n})
        await await_until(lambda: receiver.undelivered == 3, 5, message="one dropped message per member")
        assert figures()["undelivered"] == before + 3
        assert "could not deliver" in caplog.text
        for name in members:
            await receiver.group_discard("room.one", name)
        await await_until(lambda: nats.subscribers(subject) == 0, 5, message="unsubscribed with the last member")
        # a receive whose consumer is gone takes its queue with it
        gone = await receiver.new_channel()
        waiting = asyncio.create_task(receiver.receive(gone))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert gone not in receiver.queues
        with pytest.raises(NotImplementedError):
            await sender.send("worker-channel", {"type": "job"})
    finally:
        await sender.flush()
        await receiver.flush()
    assert receiver.queues == {} and receiver.groups == {} and receiver.subscriptions() == 0
    inboxes = (sender.process_address(sender.process), receiver.process_address(receiver.process))
    await await_until(lambda: not any(nats.subscribers(inbox) for inbox in inboxes), 5,
                      message="no inbox subscription left after flush()")


# Channels' consumer closes stale database connections around each message; where an earlier test of
# this process left one open in the sync thread, that touches the database.
@pytest.mark.django_db(transaction=True)
async def test_plain_channels_consumers_use_the_layer(on_nats, settings):
    """A Channels consumer that knows nothing of realtime: group_add on connect, group_send on receive."""
    from channels.generic.websocket import AsyncJsonWebsocketConsumer
    from channels.layers import channel_layers
    from channels.testing import WebsocketCommunicator

    class Room(AsyncJsonWebsocketConsumer):
        groups = ["lobby"]

        async def receive_json(self, content, **kwargs):
            await self.channel_layer.group_send("lobby", {"type": "chat.message", "text": content["text"]})

        async def chat_message(self, event):
            await self.send_json({"text": event["text"]})

    settings.CHANNEL_LAYERS = {"default": {**NATS_LAYER["default"], "CONFIG": {"hosts": [on_nats.url]}}}
    channel_layers.backends.pop("default", None)
    try:
        first, second = WebsocketCommunicator(Room.as_asgi(), "/"), WebsocketCommunicator(Room.as_asgi(), "/")
        assert (await first.connect(5))[0] and (await second.connect(5))[0]
        await first.send_json_to({"text": "hello"})
        assert await first.receive_json_from(5) == {"text": "hello"}
        assert await second.receive_json_from(5) == {"text": "hello"}
        assert await asyncio.to_thread(on_nats.subscribers, "asgi.g.lobby") == 1  # two consumers, one subscription
        await first.disconnect()
        await second.disconnect()
        await await_until(lambda: on_nats.subscribers("asgi.g.lobby") == 0, 5, message="the group's subscription ends")
    finally:
        layer = channel_layers.backends.pop("default", None)
        if layer is not None:
            await layer.flush()


async def test_a_publish_while_nats_is_down_raises_at_once_and_is_never_sent_later(tmp_path, settings):
    """No buffering while disconnected: a publish that raised is not delivered after the reconnect."""
    from realtime.pubsub.nats import NatsChannelLayer, NatsUnreachable, close_clients

    own = NatsServer(tmp_path).start()
    settings.NATS_URL = own.url
    sender, receiver = NatsChannelLayer(hosts=[own.url]), NatsChannelLayer(hosts=[own.url])
    try:
        name = await receiver.new_channel()
        await receiver.group_add("outage", name)
        own.kill()
        with pytest.raises(NatsUnreachable):
            async with asyncio.timeout(10):
                while True:  # until the client has noticed (the first write after a crash may still "succeed")
                    await sender.group_send("outage", {"type": "lost"})
                    await asyncio.sleep(0.05)
        own.start()
        await await_until(lambda: own.subscribers(receiver.group_address("outage")) == 1, 20,
                          message="the receiver resubscribed after the restart")
        await sender.group_send("outage", {"type": "after"})
        got = []
        async with asyncio.timeout(5):
            while not got or got[-1]["type"] != "after":
                got.append(await receiver.receive(name))
        assert [m for m in got if m["type"] == "lost"] == []
    finally:
        await sender.flush()
        await receiver.flush()
        await close_clients()
        own.stop()


# -- history on JetStream ------------------------------------------------------------------------------


async def test_history_ids_resume_honestly_and_are_bounded_per_subject(on_nats):
    from realtime.pubsub import ids
    from realtime.pubsub.jetstream import JetStreamHistory, epoch_of, stream_name, subject
    from realtime.pubsub.nats import client

    one, two = JetStreamHistory(None, "unit:one", 3), JetStreamHistory(None, "unit:two", 3)
    assert one.stream == two.stream == stream_name("unit:x") != stream_name("other:one")  # a stream per prefix
    assert subject("unit:é/1") != subject("unit:e/1")
    assert subject("unit:a.b>*").count(".") == subject("unit:ab").count(".") == 3  # any name is one token
    epoch = epoch_of(await one.info())
    assert await one.after("0") == ([], True)
    assert await one.newest_id() is None
    first = [await one.append({"n": n}, epoch) for n in range(2)]
    other = await two.append({"other": 1}, epoch)
    more = [await one.append({"n": n}, epoch) for n in range(2, 5)]
    held = first + more
    assert [ids.parse(i)[0] for i in held] == [epoch] * 5
    assert await one.newest_id() == held[-1]
    # bounded like maxlen: the last 3 of this channel, whatever the other channel of the stream holds
    replay, recovered = await one.after("0")
    assert [m for _, m in replay] == [{"n": 2}, {"n": 3}, {"n": 4}] and recovered is False
    assert await one.after(held[2]) == ([(held[3], {"n": 3}), (held[4], {"n": 4})], True)
    assert await one.after(held[-1]) == ([], True)
    assert (await two.after("0")) == ([(other, {"other": 1})], True)
    # trimmed away, another channel's id, a future id, another epoch, garbage: not recovered, everything held
    for asked in (held[0], other, ids.make(epoch, 10**6), ids.make(epoch + 1, 4), "nonsense", ids.make(epoch - 1, 4)):
        replay, recovered = await one.after(asked)
        assert recovered is False and [i for i, _ in replay] == held[2:], asked
    # the stream deleted and made again (a wiped store): the old ids are of another epoch
    connection = await client()
    await connection.jetstream().delete_stream(one.stream)
    renewed = JetStreamHistory(None, "unit:one", 3)
    new_epoch = epoch_of(await renewed.info())
    assert new_epoch != epoch
    fresh = await renewed.append({"n": "new"}, new_epoch)
    replay, recovered = await renewed.after(held[2])
    assert recovered is False and replay == [(fresh, {"n": "new"})]


async def test_a_channel_with_history_on_nats_publishes_resumes_and_leaves_no_consumer(on_nats):
    from realtime import Channel
    from realtime.pubsub.jetstream import JetStreamTransport, stream_name

    channel = Channel("unitlive:feed", history=10)
    assert isinstance(channel.transport(), JetStreamTransport) and channel.reaches_other_processes
    seen = []
    async with asyncio.timeout(20):
        subscription = channel.subscribe(with_ids=True)
        reader = asyncio.create_task(anext_all(subscription, seen, 3))
        await await_until(lambda: stream_consumers(on_nats, stream_name("unitlive:feed")) == 1, 10,
                          message="one reading consumer")
        published = [(await channel.publish_with_id({"n": n}))[1] for n in range(3)]
        await reader
        assert [i for i, _ in seen] == published
        replay, recovered = await channel.replay_after(published[0])
        assert recovered and [i for i, _ in replay] == published[1:]
        await subscription.aclose()
    await await_until(lambda: stream_consumers(on_nats, stream_name("unitlive:feed")) == 0, 20,
                      message="the reading consumer is gone with the last subscriber")
    assert channel.subscriber_count == 0 and channel._listener is None


async def until_publishing(server, timeout=30.0):
    """Until a publish through ``server`` goes out (its NATS client has reconnected)."""
    async def publishes():
        async with websockets.connect(f"{server.ws_url}/api/t/publish-or-report/live-ticks") as ws:
            await ws.send(json.dumps({"symbol": "none", "ready": True}))
            return "delivered" in json.loads(await asyncio.wait_for(ws.recv(), 10))

    await await_until(publishes, timeout, interval=0.2, message=f"{server.url} publishing again")


async def stored_after(nats, name):
    """``(sequence, message)`` of everything the stream holds for channel ``name``, read by a consumer of ours."""
    from nats.js import api

    from realtime.pubsub.jetstream import stream_name, subject
    from realtime.pubsub.nats import client, close_clients

    connection = await client(nats.url)
    stored = []
    try:
        js = connection.jetstream()
        last = (await js.get_last_msg(stream_name(name), subject(name))).seq
        reader = await js.subscribe(subject(name), stream=stream_name(name), ordered_consumer=True,
                                    deliver_policy=api.DeliverPolicy.ALL)
        while not stored or stored[-1][0] < last:
            msg = await reader.next_msg(timeout=5)
            stored.append((msg.metadata.sequence.stream, json.loads(msg.data)))
        await reader.unsubscribe()
    finally:
        await close_clients()
    return stored


async def anext_all(subscription, into, count):
    async for item in subscription:
        into.append(item)
        if len(into) == count:
            return


# -- the system checks ---------------------------------------------------------------------------------


def test_nats_url_and_the_nats_layer_go_together_and_what_is_redis_only_is_said(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    [(check_id, message, hint)] = found(NATS_URL="nats://127.0.0.1:4222", REDIS_URL=None, CHANNEL_LAYERS=REDIS_LAYER)
    assert check_id == "realtime.E013" and "history channels are on NATS JetStream" in message
    assert "realtime.pubsub.nats.NatsChannelLayer" in hint
    [(check_id, message, hint)] = found(NATS_URL=None, REDIS_URL=None, CHANNEL_LAYERS=NATS_LAYER)
    assert check_id == "realtime.E013" and "NATS_URL is not set" in message and "in each process" in message
    [(check_id, message, hint)] = found(NATS_URL="nats://127.0.0.1:4222", REDIS_URL=None, CHANNEL_LAYERS=NATS_LAYER)
    assert check_id == "realtime.W011" and "Redis-only" in message and "presence is shared on NATS KV" in message
    assert "Set REDIS_URL too" in hint
    assert found(NATS_URL="nats://127.0.0.1:4222", REDIS_URL="redis://127.0.0.1:6379/3",
                 CHANNEL_LAYERS=NATS_LAYER) == []
    assert found(NATS_URL="nats://127.0.0.1:4222", REDIS_URL=None, CHANNEL_LAYERS=NATS_LAYER,
                 SILENCED_SYSTEM_CHECKS=["realtime.W011"]) == []


def test_the_demo_moves_to_nats_with_one_environment_variable(nats):
    import subprocess

    from tests.servers import PYTHON, ROOT

    env = {**os.environ, "NATS_URL": nats.url}
    env.pop("REDIS_URL", None)
    script = ("from django.conf import settings; import django; django.setup(); "
              "from realtime.pubsub.brokers import history_broker; "
              "print(settings.CHANNEL_LAYERS['default']['BACKEND'], history_broker())")
    out = subprocess.run([PYTHON, "-c", script], cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "project.settings"},
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split(" ", 1) == ["realtime.pubsub.nats.NatsChannelLayer", f"('nats', '{nats.url}')\n"], out


# -- two daphne processes on NATS ------------------------------------------------------------------------


async def test_a_publish_in_one_process_reaches_subscribers_in_the_other(servers, nats):
    (a, b), _ = servers
    on_a, on_b = await subscribed("N1", a, b, via=a)
    await publish_via(b, "live-ticks", {"symbol": "N1", "price": 1})
    assert await receive(on_a) == {"symbol": "N1", "price": 1}
    assert await receive(on_b) == {"symbol": "N1", "price": 1}
    # one subscription per process for the group, whatever the sockets
    extra = [await websockets.connect(f"{b.ws_url}/api/t/channel-ticks/N1") for _ in range(5)]
    subject = f"asgi.g.{group_name('live-ticks').replace('.', '~')}"
    assert await asyncio.to_thread(nats.subscribers, subject) == 2
    # one NATS connection per process, whatever its groups and history channels
    assert (await asyncio.to_thread(nats.connz))["num_connections"] == 2
    for ws in (on_a, on_b, *extra):
        await ws.close()
    # nothing outlives the connections: no group subscription, no subscriber
    await await_until(lambda: nats.subscribers(subject) == 0, 15, message="both processes unsubscribed")
    for server in (a, b):
        stats = await live_stats(server)
        assert stats["tick_channel"] == 0
    # and no task: a second round of subscribers leaves each process with the tasks it had before it
    baseline = [(await quiet_live(server))["tasks"] for server in (a, b)]
    sockets = await subscribed("N2", a, b, via=b)
    sockets += [await websockets.connect(f"{server.ws_url}/api/t/channel-ticks/N2") for server in (a, b) * 3]
    await publish_via(a, "live-ticks", {"symbol": "N2", "price": 2})
    for ws in sockets:
        await ws.close()
    await await_until(lambda: nats.subscribers(subject) == 0, 15, message="both processes unsubscribed again")
    for server, before in zip((a, b), baseline, strict=True):
        after = await asettled(lambda server=server: live_stats(server),
                               lambda now, before=before: now["tasks"] <= before, 15)
        assert after["tasks"] <= before and after["tick_channel"] == 0, (before, after)


async def test_history_resume_across_the_two_processes(servers, nats):
    from realtime.pubsub.jetstream import stream_name

    (a, b), _ = servers
    seen = await two_entries_followed(a, b)
    await publish_via(a, "live-history", {"n": 3}, {"n": 4})
    resumed = await read_events(b.url, 2, last_event_id=seen[-1][1])
    assert [(e, json.loads(d)["n"]) for e, _, d in resumed] == [("entry", 3), ("entry", 4)]
    assert resumed[0][1].split("-")[0] == seen[-1][1].split("-")[0]  # one stream's epoch in both processes
    # the follower's consumer ends with it
    await await_until(lambda: stream_consumers(nats, stream_name("live-history")) == 0, 20,
                      message="no consumer left once nobody reads")


async def test_presence_is_one_member_per_user_across_the_two_processes_on_nats_kv(servers, nats):
    (a, b), users = servers
    channel = "lobby:nats"
    watchers = [await opened(server) for server in (a, b)]
    for watcher in watchers:
        assert (await request(watcher, {"op": "subscribe", "ref": "w", "channel": channel}))["ok"]
    companion = f"asgi.g.{group_name(COMPANION + channel).replace('.', '~')}"  # each process's presence bridge
    await await_until(lambda: nats.subscribers(companion) == 2, 10, message="both presence bridges subscribed")
    tab_a = await member_socket(a, "plain", channel)
    tab_b = await member_socket(b, "plain", channel)
    for watcher in watchers:
        join = await until(watcher, "join")
        assert join["member"]["id"] == users["plain"]
    for watcher in watchers:
        answer = await request(watcher, {"op": "presence", "ref": "p", "channel": channel})
        assert answer["data"]["members"] == [{"id": users["plain"], "info": {"name": "plain"}, "connections": 2}]
    await tab_a.close()
    await tab_b.close()
    for watcher in watchers:
        leave = await until(watcher, "leave", timeout=10)
        assert leave["member"]["id"] == users["plain"]
        # one join and one leave for the user's two connections: nothing else came
        answer = await request(watcher, {"op": "presence", "ref": "p2", "channel": channel})
        assert answer["data"]["members"] == []
        await watcher.close()


async def test_a_killed_process_is_reaped_from_nats_kv_once(servers, nats, tmp_path):
    import signal

    (a, _), users = servers
    channel = "lobby:nats-killed"
    doomed = Daphne(a.env, tmp_path / "daphne-nats-doomed.log").start()
    try:
        watcher = await opened(a)
        assert (await request(watcher, {"op": "subscribe", "ref": "w", "channel": channel}))["ok"]
        companion = f"asgi.g.{group_name(COMPANION + channel).replace('.', '~')}"
        await await_until(lambda: nats.subscribers(companion) == 1, 10, message="a's presence bridge")
        victim = await member_socket(doomed, "editor", channel)
        survivor = await member_socket(a, "staff", channel)  # a has members: it heartbeats, and reaps
        assert {(await until(watcher, "join"))["member"]["id"] for _ in range(2)} == {users["editor"], users["staff"]}
        doomed.stop(signal.SIGKILL)
        leave = await until(watcher, "leave", timeout=20)  # PRESENCE_TIMEOUT is 3 s here
        assert leave["member"] == {"id": users["editor"], "info": {"name": "editor"}, "connections": 0}
        answer = await request(watcher, {"op": "presence", "ref": "p", "channel": channel})
        assert [m["id"] for m in answer["data"]["members"]] == [users["staff"]]
        with pytest.raises(TimeoutError):  # announced once, by one reaper
            await until(watcher, "leave", timeout=3)
        await victim.close()
        await survivor.close()
        await watcher.close()
    finally:
        doomed.stop(signal.SIGKILL)


async def test_the_servers_say_at_start_what_stays_per_process_without_redis(servers):
    (a, b), _ = servers
    for server in (a, b):
        assert "realtime.W011" in server.log() and "lifecycle events" in server.log()


async def test_after_nats_is_killed_and_restarted_every_publish_reaches_everyone_and_resumes_are_honest(
        servers, nats):
    (a, b), _ = servers
    on_a, on_b = await subscribed("K1", a, b, via=a)
    followed: list = []
    follower = asyncio.create_task(follow(b, "/api/t/sse/resumable", followed))
    reports: list = []

    async def publishing():
        """Publishes through a until cancelled, keeping what the publisher was told of each."""
        n = 0
        while True:
            try:
                async with websockets.connect(f"{a.ws_url}/api/t/publish-or-report/live-history",
                                              open_timeout=5) as ws:
                    while True:
                        n += 1
                        await ws.send(json.dumps({"n": 1000 + n}))
                        reports.append((n, json.loads(await asyncio.wait_for(ws.recv(), 15))))
                        await asyncio.sleep(0.02)
            except (OSError, TimeoutError, websockets.ConnectionClosed):
                await asyncio.sleep(0.1)

    publisher = None
    try:
        await primed_followers([followed], a)
        last_seen = followed[-1][1]
        publisher = asyncio.create_task(publishing())
        await await_until(lambda: len(reports) >= 5, 10, message="publishes before the crash")
        nats.kill()
        await await_until(lambda: any("error" in r for _, r in reports[-3:]), 20,
                          message="the publisher told of the outage")
        # a channel without history (the layer) refuses too, at once: nothing is buffered for later
        async with websockets.connect(f"{b.ws_url}/api/t/publish-or-report/live-ticks") as ws:
            await ws.send(json.dumps({"symbol": "K1", "lost": True}))
            refused = json.loads(await asyncio.wait_for(ws.recv(), 15))
        assert refused["error"] == "broker_unavailable" and "NATS is unreachable" in refused["detail"]
        nats.start()
        await await_until(lambda: "delivered" in reports[-1][1], 30, message="publishes succeed again")
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)
        await until_publishing(b)  # b's client reconnects by itself too, a moment apart from a's
        # every core subscription is back in both processes: probes until both hear, then all of 20
        on_a.close_timeout = on_b.close_timeout = 1
        await on_a.close()
        await on_b.close()
        on_a, on_b = await subscribed("K2", a, b, via=b)
        for n in range(20):
            await publish_via(a if n % 2 else b, "live-ticks", {"symbol": "K2", "n": n})
        for ws in (on_a, on_b):
            got = [(await receive(ws, 10))["n"] for _ in range(20)]
            assert sorted(got) == list(range(20))  # and no "lost" tick: it would have come first
        # history: the follower's consumer was made again; a resume from before the crash is complete or reset
        await publish_via(b, "live-history", {"n": 2001})
        resumed = await resume_until(a, last_seen, 2001, timeout=20)
        await await_until(lambda: any(d == {"n": 2001} for _, _, d in followed), 20,
                          message="the live follower reads on after the restart")
        stored = await stored_after(nats, "live-history")
        epoch, after = last_seen.split("-")
        held = [f"{epoch}-{seq}" for seq, _ in stored if seq > int(after)]
        if resumed[0][0] != "reset":  # recovered: every message since last_seen, in order, none missing
            assert [i for _, _, i in resumed] == held
        assert resumed[-1][:2] == ("entry", {"n": 2001})
        # the live follower missed nothing: every message after its position, in stream order, once
        live = [i for _, i, _ in followed if i and int(i.split("-")[1]) > int(after)]
        assert live == held
        # what the publisher was told went out survived the crash
        told_ok = {1000 + n for n, r in reports if "delivered" in r}
        assert told_ok and told_ok <= {m.get("n") for _, m in stored}
        assert any("error" in r for _, r in reports)
        assert all("NATS is unreachable" in r["detail"] for _, r in reports if "error" in r)
    finally:
        if publisher is not None:
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await on_a.close()
        await on_b.close()


async def test_two_reapers_at_once_announce_a_dead_process_member_once_and_spare_the_living(on_nats, settings):
    """KV presence's reap: a dead process's connections leave each member it held; a member left with
    none is announced by exactly one of two processes reaping at the same moment."""
    from realtime.pubsub.channel import PROCESS_ID
    from realtime.topics.kv_presence import BUCKET, KVPresence, token
    from realtime.topics.presence import reap_listeners

    settings.REALTIME = {**settings.REALTIME, "PRESENCE_TIMEOUT": 30}
    first, second = KVPresence(on_nats.url), KVPresence(on_nats.url)
    kv, _ = await first.buckets()
    dead, channel = "deadprocess0", "unit:reap"
    shared, alone = json.dumps(7), json.dumps(8)
    await kv.put(f"procs.{dead}", b"")
    for uid, counts in ((shared, {dead: 2, PROCESS_ID: 1}), (alone, {dead: 1})):
        await kv.put(f"x.{dead}.{token(channel)}.{token(uid)}", b"")
        await kv.put(f"m.{token(channel)}.{token(uid)}", json.dumps({"i": {"n": uid}, "p": counts}).encode())
    heard: list = []

    async def listener(member_id):
        heard.append(member_id)

    reap_listeners[channel] = listener
    try:
        await asyncio.gather(first.reap(), second.reap())
        assert heard == [8]  # once, whichever process won the claim
        assert await first.members(channel) == [{"id": 7, "info": {"n": shared}, "connections": 1}]
        assert [e.key for e in await first._listed(BUCKET, f"x.{dead}.*.*")] == []
        assert [e.key for e in await first._listed(BUCKET, f"procs.{dead}")] == []
    finally:
        reap_listeners.pop(channel, None)
        await first.aclose()
        await second.aclose()
