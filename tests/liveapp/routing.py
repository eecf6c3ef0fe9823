"""Endpoints the live tests drive: the specification's examples verbatim, plus probes."""

import asyncio
import gc
import threading
import time

from project.demo.routing import EchoWS
from realtime import (
    BrokerUnavailable,
    Channel,
    HasRole,
    IsAdmin,
    IsAuthenticated,
    IsOwner,
    Router,
    SSEView,
    WebSocketState,
    WebSocketView,
    _authenticate_ws,
    _check_ws_permissions,
    sse_response,
)
from realtime.memory import open_connections
from realtime.ops.stats import stats as ops_stats
from realtime.permissions import Permission
from realtime.pubsub.channel import registry
from realtime.security import inbound_addresses
from realtime.topics.fallback import sessions as fallback_sessions

# --- the specification's examples ---------------------------------------------------------------

# EchoWS is the demo project's own, the specification's public example verbatim.


class PrivateStream(WebSocketView):
    permission_classes = [IsAuthenticated]

    async def on_connect(self, ws, **params):
        # self.user é preenchido automaticamente após autenticação
        print(f"User {self.user.id} connected")

    async def on_receive(self, ws, data):
        await ws.send_json({"user": self.user.email, "msg": data})


class IsSubscriber(Permission):
    message = "Subscription required"

    async def has_permission(self, request, view=None):
        user = getattr(request, "user", None)
        if user is None:
            user = getattr(getattr(request, "state", None), "user", None)
        return user is not None and getattr(user, "is_subscriber", False)


class PremiumStream(WebSocketView):
    permission_classes = [IsAuthenticated, IsSubscriber]

    async def on_connect(self, ws, **params):
        # Só chega aqui se autenticado E subscriber
        await ws.send_json({"premium": True})


class TickHub:
    """The spec's tick_hub: per-symbol queues."""

    def __init__(self):
        self.queues = {}

    async def subscribe(self, symbol):
        queue = asyncio.Queue()
        self.queues.setdefault(symbol, set()).add(queue)
        return queue

    async def unsubscribe(self, symbol, queue):
        self.queues.get(symbol, set()).discard(queue)

    async def publish(self, symbol, tick):
        for queue in self.queues.get(symbol, ()):
            queue.put_nowait(tick)

    def count(self):
        return sum(len(q) for q in self.queues.values())


tick_hub = TickHub()


class TickStream(WebSocketView):
    keepalive = 15

    async def on_connect(self, ws, **params):
        self.symbol = params.get("symbol", "R_100")
        self._queue = await tick_hub.subscribe(self.symbol)

    async def on_disconnect(self, ws, code):
        await tick_hub.unsubscribe(self.symbol, self._queue)

    async def _handle(self, ws):
        params = ws.path_params or {}

        # Auth (se permission_classes definido)
        if self.permission_classes:
            self.user = await _authenticate_ws(ws)
            denied = await _check_ws_permissions(
                self.permission_classes, ws, self.user, self
            )
            if denied:
                await ws.close(code=4003, reason=denied)
                return

        await ws.accept()
        try:
            await self.on_connect(ws, **params)
        except Exception:
            await ws.close(code=1011)
            return

        try:
            while True:
                tick = await self._queue.get()
                if ws.client_state != WebSocketState.CONNECTED:
                    break
                await ws.send_json(tick)
        except Exception:
            pass
        finally:
            await self.on_disconnect(ws, 1000)


class PrivateTickStream(TickStream):
    permission_classes = [IsAuthenticated]


class TickPublish(WebSocketView):
    """Publishes every message it receives to tick_hub (drives TickStream from a test)."""

    async def on_receive(self, ws, data):
        await tick_hub.publish(data["symbol"], data)
        await ws.send_json({"published": True})


# The spec's complete trading example, on a Channel.
tick_channel = Channel("live-ticks", maxlen=500)


class TickStreamWS(WebSocketView):
    """Ticks de mercado em tempo real (público)."""

    keepalive = 15

    async def on_connect(self, ws, **params):
        self.symbol = params.get("symbol", "R_100")

    async def _handle(self, ws):
        await ws.accept()
        await self.on_connect(ws, **(ws.path_params or {}))
        async for tick in tick_channel.subscribe():
            if tick["symbol"] == self.symbol:
                if ws.client_state != WebSocketState.CONNECTED:
                    break
                await ws.send_json(tick)


class ChannelTicks(WebSocketView):
    """The public push hook over a Channel."""

    async def stream(self, ws, symbol):
        async for tick in tick_channel.subscribe():
            if tick["symbol"] == symbol:
                yield tick

    async def on_receive(self, ws, data):
        delivered = await tick_channel.publish(data)
        await ws.send_json({"delivered": delivered})


# --- permission probes ---------------------------------------------------------------------------


class Hello(WebSocketView):
    async def on_connect(self, ws, **params):
        user = self.user
        await ws.send_json({"user": getattr(user, "username", None), "params": params})


class AdminOnly(Hello):
    permission_classes = [IsAdmin]


class EditorOnly(Hello):
    permission_classes = [HasRole("editor")]


class OwnerOnly(Hello):
    permission_classes = [IsOwner]


class EditorOrAdmin(Hello):
    permission_classes = [HasRole("editor") | IsAdmin]


# --- SSE ------------------------------------------------------------------------------------------

notifications = Channel("live-notifications", maxlen=100)


class SystemEvents(SSEView):
    ping_interval = 1

    async def stream(self, request, **params):
        count = 0
        while True:
            count += 1
            yield {"event": "update", "data": {"count": count}, "id": str(count)}
            await asyncio.sleep(0.2)


async def get_next_event():
    """The spec leaves this to the application: here, the time every 0.2 s."""
    await asyncio.sleep(0.2)
    return {"time": time.time()}


async def listen_notifications(user_id):
    """The spec leaves this to the application: here, one user's messages on a Channel."""
    async for notification in notifications.subscribe():
        if notification["user_id"] == user_id:
            yield notification


# The specification's SystemEvents and UserNotifications, verbatim.
class SpecSystemEvents(SSEView):
    ping_interval = 15

    async def stream(self, request, **params):
        while True:
            event = await get_next_event()
            yield {"event": "update", "data": event}


class UserNotifications(SSEView):
    permission_classes = [IsAuthenticated]

    async def stream(self, request, **params):
        user_id = self.user.id  # disponível após auth
        async for notification in listen_notifications(user_id):
            yield {
                "event": "notification",
                "data": notification,
                "id": str(notification["id"]),
            }


class Silent(SSEView):
    """Never sends an event: only the opening comment and pings every 15 s."""

    async def stream(self, request, **params):
        await asyncio.Event().wait()
        yield {"data": "never"}


class Forever(SSEView):
    permission_classes = [IsAuthenticated]
    ping_interval = 0.5

    async def stream(self, request, **params):
        yield {"event": "open", "data": self.user.username}
        await asyncio.Event().wait()


class EditorEvents(Forever):
    """Forever, for members of the ``editor`` group."""

    permission_classes = [HasRole("editor")]


class UsesTheORM(SSEView):
    """Queries the database before and while it streams, then stays open: holds no thread of its own."""

    async def stream(self, request, **params):
        from django.contrib.auth import get_user_model

        users = get_user_model().objects
        yield {"event": "count", "data": {"users": await users.acount()}}
        await asyncio.sleep(0.05)
        yield {"event": "count", "data": {"users": await users.acount()}}
        await asyncio.Event().wait()


class Fails(SSEView):
    """One event, then a bug: a TypeError, the kind Django would take for a sync iterator."""

    async def stream(self, request, **params):
        yield {"event": "hello", "data": "before the bug"}
        yield {"data": 42}  # not a str, dict or list


class OwnerEvents(SSEView):
    permission_classes = [IsOwner]

    async def stream(self, request, **params):
        yield {"event": "owner", "data": {"userId": params["userId"]}}


class Quiet(SSEView):
    """One event, then silence: only pings."""

    ping_interval = 0.3

    async def stream(self, request, **params):
        yield {"event": "hello", "data": request.stamp}
        await asyncio.Event().wait()


history_channel = Channel("live-history", history=50)
#: What tests/test_outbox.py and test_publish_on_commit.py publish to: with REDIS_URL, Redis Streams the tests read.
commit_channels = [Channel(f"live-commit-{n}", history=10000) for n in range(4)]
finalized = {"count": 0}


class Resumable(SSEView):
    ping_interval = 0

    async def stream(self, request, **params):
        try:
            async for event in self.follow(history_channel, event="entry"):
                yield event
        finally:
            finalized["count"] += 1


class ResumableRelay(SSEView):
    """``Resumable`` on the direct path: ``relay`` instead of a ``follow()`` generator."""

    ping_interval = 0
    relay = history_channel
    relay_event = "entry"


class Publish(WebSocketView):
    """Publishes each received message to the Channel named in the path."""

    async def on_receive(self, ws, data):
        delivered = await Channel.named(self.params["name"]).publish(data)
        await ws.send_json({"delivered": delivered})


class PublishOrReport(WebSocketView):
    """Publishes each received message to the named Channel and answers what the publisher learnt."""

    async def on_receive(self, ws, data):
        try:
            delivered = await Channel.named(self.params["name"]).publish(data)
        except BrokerUnavailable as error:
            await ws.send_json({"error": "broker_unavailable", "detail": str(error)})
        else:
            await ws.send_json({"delivered": delivered})


# --- leak probe -----------------------------------------------------------------------------------


class Stats(WebSocketView):
    """Reports live tasks and subscribers, so tests can prove nothing outlives its connection."""

    async def on_connect(self, ws, **params):
        gc.collect()
        await asyncio.sleep(0)
        await ws.send_json(
            {
                "tasks": len(asyncio.all_tasks()),
                "tick_channel": tick_channel.subscriber_count,
                "notifications": notifications.subscriber_count,
                "tick_hub": tick_hub.count(),
                "history": history_channel.subscriber_count,
                "finalized": finalized["count"],
                "threads": threading.active_count(),
                "open_connections": open_connections.count,  # this probe's own included
                "fallback_sessions": len(fallback_sessions),
                # Inbound bytes held unread, per client address, and connections waiting for theirs.
                "inbound_bytes": {str(key): held for key, held in inbound_addresses.totals.items()},
                "inbound_waiting": inbound_addresses.waiting,
                # WebSockets the server closed, by close code.
                "server_closed": {code: count for (protocol, code, by), count in ops_stats.closed.items()
                                  if protocol == "websocket" and by == "server"},
            }
        )


class Subscribers(WebSocketView):
    """The subscribers of one Channel in this process, so tests wait for a subscription instead of sleeping."""

    async def on_connect(self, ws, **params):
        channel = registry.get(params["name"])
        count = channel.subscriber_count if channel is not None else 0
        await ws.send_json({"name": params["name"], "subscribers": count})


async def hello_events(request):
    async def gen():
        yield {"event": "hello", "data": "world"}
        yield {"event": "update", "data": {"count": 42}}

    return sse_response(gen())


router = Router(prefix="/t", tags=["Tests"])
router.register_websocket("/echo/{room}", EchoWS)
router.register_websocket("/private", PrivateStream)
router.register_websocket("/premium", PremiumStream)
router.register_websocket("/ticks/{symbol}", TickStream)
router.register_websocket("/private-ticks/{symbol}", PrivateTickStream)
router.register_websocket("/tick-publish", TickPublish)
router.register_websocket("/trading/ticks/{symbol}", TickStreamWS)
router.register_websocket("/channel-ticks/{symbol}", ChannelTicks)
router.register_websocket("/hello/<int:number>", Hello)
router.register_websocket("/admin-only", AdminOnly)
router.register_websocket("/editor-only", EditorOnly)
router.register_websocket("/owner/{user_id}", OwnerOnly)
router.register_websocket("/editor-or-admin", EditorOrAdmin)
router.register_websocket("/stats", Stats)
router.register_websocket("/subscribers/{name}", Subscribers)
router.register_sse("/sse/system", SystemEvents)
router.register_sse("/sse/spec-system", SpecSystemEvents)
router.register_sse("/sse/notifications", UserNotifications)
router.register_sse("/sse/owner/{userId}", OwnerEvents)
router.register_sse("/sse/hello", hello_events)
router.register_sse("/sse/quiet", Quiet)
router.register_sse("/sse/forever", Forever)
router.register_sse("/sse/editor-forever", EditorEvents)
router.register_sse("/sse/silent", Silent)
router.register_sse("/sse/orm", UsesTheORM)
router.register_sse("/sse/fails", Fails)
router.register_sse("/sse/resumable", Resumable)
router.register_sse("/sse/resumable-relay", ResumableRelay)
router.register_websocket("/publish/{name}", Publish)
router.register_websocket("/publish-or-report/{name}", PublishOrReport)


# --- route specificity: a protected static route registered after a public parameter ---------------


class PublicRoom(WebSocketView):
    async def on_connect(self, ws, **params):
        await ws.send_json({"view": "room", "room": params["room"]})


class Moderation(WebSocketView):
    permission_classes = [IsAuthenticated]

    async def on_connect(self, ws, **params):
        await ws.send_json({"view": "moderation", "user": self.user.username})


router.register_websocket("/rooms/{room}", PublicRoom)
router.register_websocket("/rooms/moderation", Moderation)  # after the parameter, on purpose
# A WebSocket route with no /ws/ segment: nginx must proxy it by its Upgrade header (tests/test_edge.py).
router.register_websocket("/ws-news", EchoWS)


# --- the client's address and scheme as the views see them (realtime.proxies; tests/test_edge.py) ---


class ClientAddress(WebSocketView):
    async def on_connect(self, ws, **params):
        await ws.send_json({"client": ws.scope["client"][0], "scheme": ws.scope.get("scheme", "ws")})


class ClientAddressEvents(SSEView):
    async def stream(self, request, **params):
        yield {"event": "address", "data": {"client": request.META["REMOTE_ADDR"], "scheme": request.scheme}}


router.register_websocket("/address", ClientAddress)
router.register_sse("/sse/address", ClientAddressEvents)
