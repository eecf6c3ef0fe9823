"""TopicSocket: the endpoint of the multi-channel protocol, a thin driver around ``ServerProtocol``.

```python
class Realtime(TopicSocket):
    topics = [Room, Notifications]

    def auto_subscribe(self, user):
        return [f"user:{user.pk}"]

router.register_websocket("/ws", Realtime)
```

Topics are registered on the socket (``topics = [...]``), the first matching pattern serves a
channel. Requests are carried out one at a time in the connection's own task, so replies come in
request order; deliveries of every subscription are written straight to the transport when
nothing is queued and it has room, else go through one :class:`Outbox` task
(``realtime.topics.delivery``). A topic's ``snapshot()`` goes in the subscribe reply, and what follows it
is the history after the snapshot's id (``_snapshot``, the seam of ``realtime.pubsub.delivery.Seam``).
Everything a connection holds (sinks on channels, presence
entries, its outbox task) goes with it.

The protocol's state, the connection's and each subscription's, is the machine's
(``realtime.topics.protocol``): the socket feeds it frames, carries out the events it returns
(one handler per event type, in ``_carry_out``) and reports back how each subscribe and
unsubscribe went. The socket keeps only the runtime handles of a subscription (:class:`Handles`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from channels.db import database_sync_to_async

from ..auth import AuthenticationFailed
from ..closecodes import CloseCode, WebSocketException
from ..conf import setting
from ..connection import WebSocket, WebSocketDisconnect
from ..encoding import UnencodableMessage
from ..ops.stats import stats
from ..permissions import first_denial, get_permissions, is_authenticated
from ..pubsub.broker import BrokerUnavailable, is_unreachable
from ..pubsub.channel import Channel
from ..pubsub.delivery import Listener, Seam
from ..websocket import WebSocketView
from . import protocol as p
from .delivery import ChannelSink, Outbox, message_event, presence_listener
from .presence import announce, companion
from .stores import presence_store
from .topic import Refused, Snapshot, Topic, release_channel

logger = logging.getLogger("realtime.topics")

#: Times a snapshot is asked for when the history no longer reaches the id it is current to.
SNAPSHOT_ATTEMPTS = 3
#: The history id before the first message (``realtime.pubsub.ids.START``): replay everything.
START = "0"


class Failed(Exception):
    """A request the driver refuses; becomes an error reply with ``code``."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass
class Handles:
    """What carries out one subscription (its state is the machine's): its Topic, Channel and sinks."""

    topic: Topic
    channel: Channel
    sink: ChannelSink
    presence_sink: Listener | None = None
    member: Any = None  # the user's pk once counted in presence


class TopicSocket(WebSocketView):
    """Many channels over one WebSocket, per docs/protocol.md."""

    #: The topics this endpoint serves, tried in order.
    topics: ClassVar[list[type[Topic]]] = []
    encoding = "json"
    #: The protocol has its own ``ping``; the transport's pings keep the connection alive.
    keepalive = 0
    #: Seconds a client may stay silent after opening before it is closed with 1008.
    first_message_timeout: ClassVar[float] = 10
    #: Channels per connection; None: ``REALTIME["MAX_SUBSCRIPTIONS"]``.
    max_subscriptions: ClassVar[int | None] = None

    def __init__(self, **initkwargs: Any) -> None:
        super().__init__(**initkwargs)
        #: Channel name → the runtime handles of that subscription, from its join to its end.
        self.handles: dict[str, Handles] = {}
        self._silence: asyncio.TimerHandle | None = None
        #: Held while a request is carried out, while the subscriptions are re-checked, and while the
        #: closing connection leaves them: each sees the subscriptions in a settled state.
        self.serial = asyncio.Lock()

    @classmethod
    def as_fallback(cls) -> Any:
        """The Django view of this socket's fallback binding (SSE down, POST up; docs/protocol.md):
        ``router.register_sse(path + "/fallback", Socket.as_fallback())``, or ``router.register_topics``,
        which registers both at once."""
        from .fallback import fallback_view

        return fallback_view(cls)

    # -- hooks --------------------------------------------------------------------------------

    def auto_subscribe(self, user: Any) -> Iterable[str]:
        """Channels to join without the client asking, once ``user`` is known (e.g. ``[f"user:{user.pk}"]``)."""
        return ()

    # -- admission ------------------------------------------------------------------------------

    async def _admit(self, ws: WebSocket) -> bool:
        offered = self.scope.get("subprotocols") or ()
        if offered and p.SUBPROTOCOL not in offered:
            return await self._refuse(ws, CloseCode.POLICY_VIOLATION, f"Subprotocol {p.SUBPROTOCOL!r} required")
        self.subprotocol = p.SUBPROTOCOL if offered else None
        return await super()._admit(ws)

    def check_throttles(self, ws: WebSocket) -> None:
        """Nothing here: the throttles run in ``on_receive``, so the client gets its rate_limited reply first."""

    async def on_connect(self, ws: WebSocket, **params: Any) -> None:
        limit = self.max_subscriptions if self.max_subscriptions is not None else setting("MAX_SUBSCRIPTIONS")
        self.protocol = p.ServerProtocol(
            p.resolver(self.topics), limit, publishable=lambda route: route.topic.accepts_publish()
        )
        self.outbox = Outbox(ws.send, _direct_writer(ws), ws)
        self.limits = self.get_throttles()
        if self.first_message_timeout:
            loop = asyncio.get_running_loop()
            self._silence = loop.call_later(self.first_message_timeout, self._too_quiet, ws)
        if is_authenticated(self.user):
            await self._auto_subscribe(ws)

    def _too_quiet(self, ws: WebSocket) -> None:
        self._spawn(ws.close(CloseCode.POLICY_VIOLATION, "No message within the first seconds"))

    async def on_receive(self, ws: WebSocket, data: Any) -> None:
        for throttle in self.limits:
            if not throttle.allow_message(ws, self):
                ref = data.get("ref") if type(data) is dict else None
                await ws.send_json(p.error(ref, "rate_limited", throttle.message))
                raise WebSocketException(CloseCode.POLICY_VIOLATION, throttle.message)
        async with self.serial:
            for event in self.protocol.receive_frame(data):
                try:
                    await self._carry_out(ws, event)
                except Failed as failure:
                    await ws.send_json(p.error(event.ref, failure.code, failure.detail))

    async def on_disconnect(self, ws: WebSocket, code: int) -> None:
        if self._silence is not None:
            self._silence.cancel()
        async with self.serial:
            for request in self.protocol.close():
                await self._do_unsubscribe(ws, request)

    async def _carry_out(self, ws: WebSocket, event: p.Event) -> None:
        """Do what one event of the machine asks; a Failed becomes the request's error reply."""
        match event:
            case p.FirstFrame():
                if self._silence is not None:
                    self._silence.cancel()
                    self._silence = None
            case p.Ping() | p.Rejected():
                await ws.send_json(event.frame)
            case p.Connect():
                await self._do_connect(ws, event)
            case p.Refresh():
                await self._do_refresh(ws, event)
            case p.Subscribe():
                await self._do_subscribe(ws, event)
            case p.Unsubscribe():
                await self._do_unsubscribe(ws, event)
            case p.Publish():
                await self._do_publish(ws, event)
            case p.Presence():
                await self._do_presence(ws, event)
            case _:
                raise TypeError(f"TopicSocket has no handler for {event!r}")

    # -- requests -------------------------------------------------------------------------------

    async def _do_connect(self, ws: WebSocket, request: p.Connect) -> None:
        user, validated = await self._validate(request.token)
        if self.user is not None and user.pk != self.user.pk:
            raise Failed("user_mismatch", "The token belongs to another user than the connection's")
        self._accept_token(user, validated)  # signs an anonymous connection in (per-user cap: 1008)
        channels = await self._auto_subscribe(ws)
        data = {"v": p.VERSION, "user": user.pk, "exp": validated.get("exp"), "channels": channels}
        await ws.send_json(p.reply(request.ref, data))

    async def _do_refresh(self, ws: WebSocket, request: p.Refresh) -> None:
        user, validated = await self._validate(request.token)
        if self.user is None:
            raise Failed("not_authenticated", "The connection has no user to refresh: send connect with the token")
        if user.pk != self.user.pk:
            raise Failed("user_mismatch", "refresh needs a token of the connection's user")
        self._accept_token(user, validated)
        await ws.send_json(p.reply(request.ref, {"exp": validated.get("exp")}))

    async def _validate(self, token: str | None) -> tuple[Any, Any]:
        authenticator = self.authenticator_class()
        try:
            validated = authenticator.get_validated_token(token or "")
            user = await database_sync_to_async(authenticator.get_user)(validated)
        except AuthenticationFailed as error:
            raise Failed(error.code, error.detail) from None
        return user, validated

    async def _do_subscribe(self, ws: WebSocket, request: p.Subscribe) -> None:
        route, name = request.route, request.channel
        try:
            topic = route.topic(name, route.params, ws=ws, user=self.user)
            ws.user = self.user
            denied = await first_denial(get_permissions(topic.permission_classes), ws, topic)
            if denied is not None:
                raise Failed("forbidden", str(getattr(denied, "message", "Permission denied")))
            await self._hook(topic, "on_subscribe", "forbidden")
        except BaseException:
            self.protocol.join_failed(name)
            raise
        await self._join(ws, request, topic)

    async def _do_unsubscribe(self, ws: WebSocket, request: p.Unsubscribe) -> None:
        """The client's unsubscribe, or (without a ref) one of the subscriptions a closing connection leaves."""
        await self._leave(request.channel)
        self.protocol.unsubscribed(request.channel)
        if request.ref is not None:
            await ws.send_json(p.reply(request.ref, {}))

    async def _do_publish(self, ws: WebSocket, request: p.Publish) -> None:
        joined = self.handles[request.channel]
        data = request.data
        topic = joined.topic
        if type(topic).on_publish is not Topic.on_publish:
            data = await self._hook(topic, "on_publish", "refused", data)
        # The reply goes before this connection's own copy of the message, as on the generic path
        # (where the copy waits for the outbox task): hold the direct path until the reply is out.
        self.outbox.held += 1
        try:
            try:
                _, message_id = await joined.channel.publish_with_id(data)
            except UnencodableMessage as error:
                raise Failed("unencodable", str(error)) from None
            except BrokerUnavailable:
                raise Failed("broker_unavailable", "The message broker is unreachable; try again") from None
            await ws.send_json(p.reply(request.ref, {"id": message_id}))
        finally:
            self.outbox.held -= 1

    async def _do_presence(self, ws: WebSocket, request: p.Presence) -> None:
        members = []
        if request.route.topic.presence:
            try:
                members = await presence_store().members(request.channel)
            except Exception as error:
                raise _unavailable(error) from None
        await ws.send_json(p.reply(request.ref, {"members": members}))

    async def _hook(self, topic: Topic, name: str, refusal: str, *args: Any) -> Any:
        """Run a topic hook: Refused becomes ``refusal``, any other error ``internal_error`` (logged)."""
        try:
            return await getattr(topic, name)(self.user, *args, **topic.params)
        except Refused as error:
            raise Failed(refusal, str(error) or "Refused") from None
        except Exception:
            logger.exception("%s.%s raised", type(topic).__name__, name)
            raise Failed("internal_error", "The topic failed; the error is logged on the server") from None

    # -- permissions re-checked on the open connection (realtime.recheck) --------------------------

    async def on_recheck(self, ws: WebSocket) -> None:
        """The socket's own permissions still hold: each channel the client subscribed to is checked
        against its topic's permissions again, with the reloaded user; one that now refuses ends with
        ``unsubscribed`` (``forbidden`` and the permission's message), the others go on.

        Channels the server joined (``auto_subscribe``) are the server's choice and are not re-checked.
        """
        if getattr(self, "protocol", None) is None:
            return  # not open yet: the subscribe requests will see the new permissions
        async with self.serial:
            for name in self.rechecked_channels():
                denied = await self._topic_denial(ws, name)
                if denied is not None:
                    await self.end_subscription(ws, name, "forbidden", denied)

    def rechecked_channels(self) -> list[str]:
        """The joined channels a re-check looks at: those the client subscribed to."""
        joined = p.SubscriptionState.JOINED
        return [name for name, s in self.protocol.subscriptions.items() if s.state is joined and s.ref is not None]

    async def _topic_denial(self, ws: WebSocket, name: str) -> str | None:
        """The message of the topic permission that now refuses channel ``name``, or None (a failing one is logged)."""
        joined = self.handles.get(name)
        if joined is None:
            return None
        topic = joined.topic
        topic.user = self.user
        try:
            denied = await first_denial(get_permissions(topic.permission_classes), ws, topic)
        except Exception:
            logger.exception("Re-checking %r failed; the subscription goes on", name)
            return None
        return None if denied is None else str(getattr(denied, "message", "Permission denied"))

    async def end_subscription(self, ws: WebSocket, name: str, code: str, detail: str) -> bool:
        """End one joined subscription from the server's side and tell the client with ``unsubscribed``
        (``on_unsubscribe`` runs, presence is left); False when it was not joined. Hold ``serial``."""
        if self.protocol.server_unsubscribe(name) is None:
            return False
        await self._leave(name)
        self.protocol.unsubscribed(name)
        try:
            await ws.send_json(p.unsubscribed(name, code, detail))
        except WebSocketDisconnect:
            pass
        return True

    # -- joining and leaving ----------------------------------------------------------------------

    async def _auto_subscribe(self, ws: WebSocket) -> list[str]:
        """Join the channels ``auto_subscribe`` names (no permission check: the server chose them)."""
        joined = []
        for name in self.auto_subscribe(self.user) or ():
            if name in self.protocol.subscriptions:
                joined.append(name)
                continue
            request = self.protocol.server_subscribe(name)
            if request is None:
                logger.warning("auto_subscribe: cannot join %r (no topic serves it, or the cap is reached)", name)
                continue
            route = request.route
            topic = route.topic(name, route.params, ws=ws, user=self.user)
            try:
                await self._hook(topic, "on_subscribe", "forbidden")
            except Failed:
                self.protocol.join_failed(name)
                continue
            await self._join(ws, request, topic)
            joined.append(name)
        return joined

    async def _join(self, ws: WebSocket, request: p.Subscribe, topic: Topic) -> None:
        """Subscribe a sink (held until the reply and the replay are out), count presence, take the
        topic's snapshot (a subscribe without ``last_id``, or one history could not recover), reply,
        replay what came after ``last_id`` or after the snapshot's id."""
        name, route, last_id, ref = request.channel, request.route, request.last_id, request.ref
        channel = route.topic.channel(name)
        sink = ChannelSink(self.outbox, name, route.topic.maxlen)
        joined = self.handles[name] = Handles(topic, channel, sink)
        channel.attach(sink)
        try:
            if route.topic.presence:
                joined.presence_sink = presence_listener(sink)
                companion(name).attach(joined.presence_sink)
                if is_authenticated(self.user):
                    joined.member = self.user.pk  # before the await, so a cancelled join is still undone
                    info = topic.member_info(self.user)
                    first = await presence_store().join(name, self.user.pk, info)
                    if first is not None:
                        await announce("join", name, first)
            replay, recovered = [], True
            if last_id is not None:
                if channel.history:
                    replay, recovered = await channel.replay_after(last_id)
                    stats.resumed(len(replay), recovered)  # as SSE's resumes are counted
                else:
                    recovered = False
            snapshot: Snapshot | None = None
            if ref is not None and (last_id is None or not recovered):
                taken = await self._snapshot(topic, channel)
                if taken is not None:
                    snapshot, replay, continued = taken
                    recovered = recovered and continued
            await channel.listening()  # a publish right after the reply must reach this sink
            if replay:
                newest = replay[-1][0]
            elif snapshot is not None:
                newest = snapshot.last_id
            else:
                newest = await channel.newest_id()
            if ref is not None:
                data = {"channel": name, "recovered": recovered, "last_id": newest}
                if snapshot is not None:
                    data["snapshot"] = {"data": snapshot.data, "last_id": snapshot.last_id}
                await ws.send_json(p.reply(ref, data))
            if not recovered:
                await ws.send_json(p.gap(name, None))
            for message_id, message in replay:
                await ws.send(message_event(name, message_id, message))
            replayed = (message_id for message_id, _ in replay)
            sink.skip = Seam(replayed, snapshot.last_id) if snapshot is not None else set(replayed)
        except BaseException as error:
            await self._leave(name, hook=False)
            self.protocol.join_failed(name)
            if isinstance(error, Exception) and not isinstance(error, (WebSocketDisconnect, Failed)):
                raise _unavailable(error) from None
            raise
        sink.activate()
        self.protocol.subscribed(name)
        if self.outbox.task is None:
            self.outbox.task = self._spawn(self._deliver())

    async def _snapshot(self, topic: Topic, channel: Channel) -> tuple[Snapshot, Any, bool] | None:
        """The topic's snapshot, the history after its id, and whether that history reached back to it.

        The sink is attached (held) before the hook runs, so what is published meanwhile is either
        in the replay or queued, and the seam drops from the queue what the snapshot or the replay
        holds. When the history no longer reaches the snapshot's id (the hook read an old state
        while many messages came), the hook is asked again, up to ``SNAPSHOT_ATTEMPTS`` times.
        """
        for _ in range(SNAPSHOT_ATTEMPTS):
            snapshot = await self._hook(topic, "snapshot", "forbidden")
            if snapshot is None:
                return None
            if type(snapshot) is not Snapshot or not (snapshot.last_id is None or type(snapshot.last_id) is str):
                logger.error("%s.snapshot returned %r, not a Snapshot(data, last_id)", type(topic).__name__, snapshot)
                raise Failed("internal_error", "The topic failed; the error is logged on the server")
            replay, recovered = await channel.replay_after(snapshot.last_id or START)
            if recovered:
                return snapshot, replay, True
        logger.warning("%s.snapshot: history no longer reaches its id %r", type(topic).__name__, snapshot.last_id)
        return snapshot, replay, False

    async def _deliver(self) -> None:
        """The connection's one delivery task; it ends quietly when the client has gone."""
        try:
            await self.outbox.run()
        except WebSocketDisconnect:
            pass

    async def _leave(self, name: str, hook: bool = True) -> None:
        """End one subscription's effects: unhook its sinks, leave presence, call ``on_unsubscribe``."""
        joined = self.handles.pop(name, None)
        if joined is None:
            return
        joined.channel.detach(joined.sink)
        self.outbox.forget(joined.sink)
        release_channel(joined.channel)
        if joined.presence_sink is not None:
            side = companion(name)
            side.detach(joined.presence_sink)
            release_channel(side)
        if joined.member is not None:
            try:
                last = await presence_store().leave(name, joined.member)
                if last is not None:
                    await announce("leave", name, last)
            except Exception:
                logger.exception("Leaving presence of %r failed", name)
        if hook:
            try:
                await joined.topic.on_unsubscribe(self.user, **joined.topic.params)
            except Exception:
                logger.exception("%s.on_unsubscribe raised", type(joined.topic).__name__)


def _direct_writer(ws: WebSocket) -> Any:
    """The accepted socket's writer of ready-made frames on daphne or uvicorn, else None."""
    from .. import servers

    return servers.websocket_writer(ws._server_send)


def _unavailable(error: Exception) -> Failed:
    """Redis unreachable: ``broker_unavailable``; anything else is logged, ``internal_error``."""
    if isinstance(error, BrokerUnavailable) or is_unreachable(error):
        logger.warning("Redis unreachable during a subscription request: %s", error)
        return Failed("broker_unavailable", "The message broker is unreachable; try again")
    logger.error("A subscription request failed", exc_info=error)
    return Failed("internal_error", "The request failed; the error is logged on the server")

