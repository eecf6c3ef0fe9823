"""Endpoints for the wire-safety tests: fan-out to slow readers, poisoned messages, limits."""

import asyncio
import os
from collections import Counter

from realtime import Channel, Gap, Router, SSEView, Topic, TopicSocket, WebSocketView, servers
from realtime.encoding import UnencodableMessage
from realtime.memory import open_connections
from realtime.pubsub.channel import registry
from realtime.topics.presence import COMPANION, announce, member

fanout = Channel("wire-fanout", maxlen=500, history=50)
#: Close codes seen by on_disconnect, by view name: the tests read them through /w/report.
closed: dict[str, list[int]] = {}


def rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


class Recorded(WebSocketView):
    async def on_disconnect(self, ws, code):
        closed.setdefault(type(self).__name__, []).append(code)


class Echo(Recorded):
    async def on_receive(self, ws, data):
        await ws.send_json({"echo": data})


class Empty(WebSocketView):
    async def on_connect(self, ws, **params):
        await ws.send_text("")
        await ws.send_bytes(b"")
        await ws.send_text("done")


class BytesBeat(WebSocketView):
    encoding = "bytes"
    keepalive = 1


class Fanout(Recorded):
    """Relays the channel; a Gap becomes {"gap": missed}."""

    keepalive = 0

    async def stream(self, ws, **params):
        async for item in fanout.subscribe(gaps=True):
            yield {"gap": item.missed} if isinstance(item, Gap) else item


class ResumableFanout(Recorded):
    """The channel after ``?last_id=``, as a project's own resuming WebSocketView relays it: one
    ``{"gap": null}`` first when history cannot vouch for that id, then ``{"id", "m"}`` frames."""

    keepalive = 0

    async def stream(self, ws, **params):
        last_id = ws.query_params.get("last_id")
        async for item in fanout.subscribe(last_id=last_id, gaps=True, with_ids=True):
            yield {"gap": item.missed} if isinstance(item, Gap) else {"id": item[0], "m": item[1]}


class Forwarded(Recorded):
    """A stream() that only forwards the channel: served by the direct delivery path (realtime.forwarding)."""

    keepalive = 0

    async def stream(self, ws, **params):
        async for message in fanout.subscribe():
            yield message


class WrittenOut(Recorded):
    """The same stream(), run as written: ``subscribe()`` with an argument is not a proven form."""

    keepalive = 0

    async def on_disconnect(self, ws, code):
        await super().on_disconnect(ws, code)
        direct[type(self).__name__] = direct.get(type(self).__name__, 0) + ws.direct

    async def stream(self, ws, **params):
        async for message in fanout.subscribe(maxlen=fanout.maxlen):
            yield message


class Relay(Recorded):
    """The same relay by the direct delivery path; a drop becomes {"gap": missed}."""

    keepalive = 0
    relay = fanout

    def relay_gap(self, missed):
        return {"gap": missed}


class EvenRelay(Relay):
    def relay_message(self, message):
        return message if message["n"] % 2 == 0 else None


class FanoutEvents(SSEView):
    ping_interval = 0

    async def stream(self, request, **params):
        async for event in self.follow(fanout, event="m"):
            yield event


class RelayEvents(SSEView):
    """follow(fanout, event="m") by the direct delivery path."""

    ping_interval = 0
    relay = fanout
    relay_event = "m"


class ForwardedEvents(SSEView):
    """An SSE stream() that only forwards the channel as {"data": message}: the direct delivery path."""

    ping_interval = 0

    async def stream(self, request, **params):
        async for message in fanout.subscribe():
            yield {"data": message}


class WrittenOutEvents(SSEView):
    """The same SSE stream(), run as written (``subscribe()`` with an argument is not proven)."""

    ping_interval = 0

    async def stream(self, request, **params):
        async for message in fanout.subscribe(maxlen=fanout.maxlen):
            yield {"data": message}


def faulty(message):
    """A relay_message that fails on the fourth message: it raises, or returns what JSON cannot encode."""
    if message["n"] == 3:
        if message["p"].startswith("nan"):
            return {"n": float("nan")}
        raise RuntimeError("a bug in relay_message")
    return message


class FaultyRelay(Relay):
    def relay_message(self, message):
        return faulty(message)


class FaultyRelayEvents(RelayEvents):
    def relay_message(self, message):
        return faulty(message)


POISON = {"surrogate": "\ud800", "nan": float("nan"), "inf": float("inf"), "object": object()}


class Publish(WebSocketView):
    """{"count", "size"}: publish that many messages; {"poison": kind}: publish a bad one.

    ``"pause"`` (seconds, default 0.002) is slept between messages; ``"burst": true`` publishes them
    all in one loop turn, never yielding, as a publisher loop that awaits nothing would: each socket
    then has many frames ready in one turn (``realtime.pubsub.delivery.WriteBatch``).
    """

    async def on_receive(self, ws, data):
        if "poison" in data:
            try:
                await fanout.publish({"bad": POISON[data["poison"]]})
            except UnencodableMessage as error:
                await ws.send_json({"error": type(error).__name__, "detail": str(error)[:80]})
            else:
                await ws.send_json({"error": None})
            return
        payload = data.get("prefix", "") + "x" * data.get("size", 10)
        burst = data.get("burst", False)
        for n in range(data["count"]):
            await fanout.publish({"n": n, "p": payload})
            if not burst:
                await asyncio.sleep(data.get("pause", 0.002))
        await ws.send_json({"published": data["count"]})


class Report(WebSocketView):
    async def on_connect(self, ws, **params):
        await ws.send_json({
            "closed": closed, "rss_kib": rss_kib(), "subscribers": fanout.subscriber_count,
            "topic_subscribers": sum(c.subscriber_count for name, c in list(registry.items()) if name.startswith(WT)),
            "tasks": len(asyncio.all_tasks()), "direct": direct, "direct_writes": servers.direct_writes_enabled(),
            "open": open_connections.count,  # this probe's own included
            # Which engine serves each subscriber of the channel: Relay and StreamDrain are the direct
            # delivery path's, Reader a subscribe() iterated by a generator.
            "drains": dict(Counter(type(getattr(queue, "drain", queue)).__name__ for queue in fanout.subscribers)),
        })



# -- the multi-channel endpoint, by its direct path and by the generic one ------------------------

#: Channel name prefixes of the topics below (Report counts their subscribers).
WT = ("wt:", "wslow:", "wlobby:", COMPANION + "wlobby:")
#: Frames written by the direct path, by view name, added up as connections end.
direct: dict[str, int] = {}


class WireOpen(Topic):
    """History enough to resume anywhere in a test's run; clients may publish."""

    pattern = "wt:{name}"
    history = 1000
    allow_publish = True


class WireSlow(Topic):
    """A small queue per subscriber, so that a client that stops reading drops messages."""

    pattern = "wslow:{name}"
    maxlen = 20


class WireLobby(Topic):
    pattern = "wlobby:{name}"
    presence = True
    history = 1000


class Topics(TopicSocket):
    """realtime.TopicSocket as shipped: the direct path where the server has one."""

    topics = [WireOpen, WireSlow, WireLobby]
    throttle_classes = []

    async def on_disconnect(self, ws, code):
        await super().on_disconnect(ws, code)
        closed.setdefault(type(self).__name__, []).append(code)
        outbox = getattr(self, "outbox", None)
        if outbox is not None:
            direct[type(self).__name__] = direct.get(type(self).__name__, 0) + outbox.direct


class GenericTopics(Topics):
    """The same endpoint with no direct writer: every frame goes through the Outbox task and ASGI."""

    async def on_connect(self, ws, **params):
        await super().on_connect(ws, **params)
        self.outbox.writer = None


class TopicScript(WebSocketView):
    """{"channels", "count", "size", "pause", "announce": {"<i>": "join"|"leave"}}: message i on
    channels[i % len], a presence frame on channels[0] before message i when announce names i."""

    async def on_receive(self, ws, data):
        channels = [WireOpen.channel(name) if name.startswith("wt:") else
                    (WireSlow if name.startswith("wslow:") else WireLobby).channel(name) for name in data["channels"]]
        payload = "x" * data.get("size", 10)
        announces = data.get("announce", {})
        pause = data.get("pause", 0.002)
        for n in range(data["count"]):
            if str(n) in announces:
                await announce(announces[str(n)], data["channels"][0], member(n, {"at": n}, 1))
            await channels[n % len(channels)].publish({"n": n, "p": payload})
            if pause:
                await asyncio.sleep(pause)
        await ws.send_json({"published": data["count"]})


class Slow(Recorded):
    """Never reads the client: for the inbound backpressure test."""

    keepalive = 0

    async def on_connect(self, ws, **params):
        self.seen = 0

    async def on_receive(self, ws, data):
        self.seen += 1
        await asyncio.sleep(0.05)


router = Router(prefix="/w")
router.register_websocket("/echo", Echo)
router.register_websocket("/empty", Empty)
router.register_websocket("/bytes-beat", BytesBeat)
router.register_websocket("/fanout", Fanout)
router.register_websocket("/relay", Relay)
router.register_websocket("/forwarded", Forwarded)
router.register_websocket("/written-out", WrittenOut)
router.register_sse("/forwarded-events", ForwardedEvents)
router.register_sse("/written-out-events", WrittenOutEvents)
router.register_websocket("/resumable-fanout", ResumableFanout)
router.register_websocket("/even-relay", EvenRelay)
router.register_websocket("/faulty-relay", FaultyRelay)
router.register_sse("/fanout-events", FanoutEvents)
router.register_sse("/faulty-relay-events", FaultyRelayEvents)
router.register_sse("/relay-events", RelayEvents)
router.register_websocket("/publish", Publish)
router.register_websocket("/report", Report)
router.register_websocket("/slow", Slow)
router.register_websocket("/topics", Topics)
router.register_websocket("/topics-generic", GenericTopics)
router.register_websocket("/topic-script", TopicScript)
