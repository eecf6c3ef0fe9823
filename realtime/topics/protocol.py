"""The multi-channel protocol v1 (docs/protocol.md) as a sans-IO state machine, in the manner of h11.

:class:`ServerProtocol` owns the state of one connection (opened, active, closing) and of each of
its subscriptions (joining, joined, leaving, with its route, ref and ``last_id``). It reads decoded
client frames into typed events (``receive_frame``, see ``realtime.topics.events``) and decides
alone what needs no I/O: malformed frames, unknown ops and channels, the subscription cap,
duplicate subscribes, requests on channels not joined, ``ping``. The driver
(``realtime.topics.socket.TopicSocket``) carries out the other events and reports back what
happened (``subscribed``, ``join_failed``, ``unsubscribed``), so the machine's record is the only
one. The steps allowed in each state are tables, as in h11's ``_state.py``; a step the table does
not hold raises :class:`IllegalTransition` naming the states it expected. No sockets, no awaits,
no Django: every rule is tested from tables (``tests/test_topics_protocol.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .events import (
    Connect,
    Event,
    FirstFrame,
    Ping,
    Presence,
    Publish,
    Refresh,
    Rejected,
    Route,
    Subscribe,
    Unsubscribe,
    error,
    gap,
    reply,
    unsubscribed,
)

__all__ = [
    "MAX_CHANNEL_LENGTH", "MAX_REF_LENGTH", "OPS", "SUBPROTOCOL", "VERSION",
    "Connect", "ConnectionState", "Event", "FirstFrame", "IllegalTransition", "Ping", "Presence", "Publish",
    "Refresh", "Rejected", "Route", "ServerProtocol", "Subscribe", "Subscription", "SubscriptionState",
    "Unsubscribe", "error", "gap", "reply", "resolver", "unsubscribed",
]

VERSION = 1
SUBPROTOCOL = "realtime.v1"
MAX_REF_LENGTH = 32
MAX_CHANNEL_LENGTH = 200
MAX_LAST_ID_LENGTH = 64
OPS = ("connect", "subscribe", "unsubscribe", "publish", "presence", "refresh", "ping")


class ConnectionState(Enum):
    """Where the connection is."""

    #: Accepted; no frame yet (the first-message timer runs).
    OPENED = "opened"
    #: The client has sent a frame.
    ACTIVE = "active"
    #: The connection is ending: no frame is read any more, its subscriptions are being left.
    CLOSING = "closing"


class SubscriptionState(Enum):
    """Where one subscription is."""

    #: The driver is carrying out the subscribe: permissions, hooks, presence, reply and replay.
    JOINING = "joining"
    #: Its messages are delivered; the client may publish, ask presence, unsubscribe.
    JOINED = "joined"
    #: The driver is ending it (the client's unsubscribe, or the connection closing).
    LEAVING = "leaving"


OPENED, ACTIVE, CLOSING = ConnectionState
JOINING, JOINED, LEAVING = SubscriptionState

#: The connection's steps: (state, step) → next state. A step not listed is illegal in that state.
CONNECTION_TRANSITIONS: dict[tuple[ConnectionState, str], ConnectionState] = {
    (OPENED, "receive_frame"): ACTIVE,
    (ACTIVE, "receive_frame"): ACTIVE,
    (OPENED, "server_subscribe"): OPENED,
    (ACTIVE, "server_subscribe"): ACTIVE,
    (OPENED, "close"): CLOSING,
    (ACTIVE, "close"): CLOSING,
}

#: A subscription's steps: (state, step) → next state; None as a state is "absent" (no subscription).
SUBSCRIPTION_TRANSITIONS: dict[tuple[SubscriptionState | None, str], SubscriptionState | None] = {
    (None, "subscribe"): JOINING,
    (None, "server_subscribe"): JOINING,
    (JOINING, "subscribed"): JOINED,
    (JOINING, "join_failed"): None,
    (JOINED, "unsubscribe"): LEAVING,
    (JOINED, "server_unsubscribe"): LEAVING,
    (JOINING, "close"): LEAVING,
    (JOINED, "close"): LEAVING,
    (LEAVING, "close"): LEAVING,
    (LEAVING, "unsubscribed"): None,
}


class IllegalTransition(RuntimeError):
    """The driver asked for a step the machine's state does not allow; the message names what it expected."""


class _Refusal(Exception):
    """A frame the protocol refuses; becomes a :class:`Rejected` event with ``code``."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(slots=True)
class Subscription:
    """One channel of the connection, as the machine records it."""

    channel: str
    route: Route
    state: SubscriptionState = JOINING
    #: The ``ref`` of the client's subscribe; None when the server joined it (``auto_subscribe``).
    ref: str | None = None
    #: The id the client resumed after, if any.
    last_id: str | None = None


class ServerProtocol:
    """One connection's protocol state: ``receive_frame(frame)`` → the events to carry out."""

    def __init__(
        self,
        resolve: Callable[[str], Route | None],
        max_subscriptions: int = 100,
        max_channel_length: int = MAX_CHANNEL_LENGTH,
        publishable: Callable[[Route], bool] = lambda route: False,
    ) -> None:
        self.resolve = resolve
        self.max_subscriptions = max_subscriptions
        self.max_channel_length = max_channel_length
        self.publishable = publishable
        self.state = OPENED
        #: The connection's subscriptions, in every state, by channel name.
        self.subscriptions: dict[str, Subscription] = {}
        #: ``connect`` was sent (whatever came of it): it may be sent once.
        self.connect_seen = False

    # -- what the client sends -------------------------------------------------------------------

    def receive_frame(self, frame: Any) -> list[Event]:
        """The events of one decoded client frame, in the order the driver carries them out."""
        first = self.state is OPENED
        self.state = self._connection_step("receive_frame")
        events: list[Event] = [FirstFrame()] if first else []
        try:
            events.append(self._read(frame))
        except _Refusal as refusal:
            ref = frame.get("ref") if type(frame) is dict else None
            events.append(Rejected(ref=ref if _valid_ref(ref) else None, code=refusal.code, detail=refusal.detail))
        return events

    def _read(self, frame: Any) -> Event:
        if type(frame) is not dict:
            raise _Refusal("bad_request", "A frame is a JSON object")
        ref = frame.get("ref")
        if not _valid_ref(ref):
            raise _Refusal("bad_request", f"'ref' must be a string of 1 to {MAX_REF_LENGTH} characters")
        op = frame.get("op")
        if op not in OPS:
            raise _Refusal("unknown_op", f"Unknown op {op!r}; known: {', '.join(OPS)}")
        if op == "ping":
            return Ping(ref=ref)
        if op in ("connect", "refresh"):
            token = frame.get("token")
            if type(token) is not str:
                raise _Refusal("bad_request", f"'{op}' needs a 'token' string")
            if op == "refresh":
                return Refresh(ref=ref, token=token)
            if self.connect_seen:
                raise _Refusal("bad_request", "'connect' may be sent once")
            self.connect_seen = True
            return Connect(ref=ref, token=token)
        channel = frame.get("channel")
        if type(channel) is not str or not channel:
            raise _Refusal("bad_request", f"'{op}' needs a 'channel' string")
        if len(channel) > self.max_channel_length:
            raise _Refusal("unknown_channel", f"Channel names are at most {self.max_channel_length} characters")
        if op == "subscribe":
            return self._subscribe(ref, channel, frame)
        subscription = self.subscriptions.get(channel)
        if subscription is None or subscription.state is not JOINED:
            if subscription is None and self.resolve(channel) is None:
                raise _Refusal("unknown_channel", f"No topic serves {channel!r}")
            raise _Refusal("not_subscribed", f"Not subscribed to {channel!r}")
        route = subscription.route
        if op == "unsubscribe":
            self._step(channel, "unsubscribe")
            return Unsubscribe(ref=ref, channel=channel, route=route)
        if op == "publish":
            if "data" not in frame:
                raise _Refusal("bad_request", "'publish' needs 'data'")
            if not self.publishable(route):
                raise _Refusal("publish_not_allowed", f"Clients may not publish on {channel!r}")
            return Publish(ref=ref, channel=channel, route=route, data=frame["data"])
        return Presence(ref=ref, channel=channel, route=route)

    def _subscribe(self, ref: str, channel: str, frame: dict[str, Any]) -> Subscribe:
        last_id = frame.get("last_id")
        if last_id is not None and (type(last_id) is not str or len(last_id) > MAX_LAST_ID_LENGTH):
            raise _Refusal("bad_request", "'last_id' must be a string (the last message id received)")
        route = self.resolve(channel)
        if route is None:
            raise _Refusal("unknown_channel", f"No topic serves {channel!r}")
        if channel in self.subscriptions:
            raise _Refusal("already_subscribed", f"Already subscribed to {channel!r}")
        if len(self.subscriptions) >= self.max_subscriptions:
            raise _Refusal("too_many_subscriptions", f"At most {self.max_subscriptions} channels on one connection")
        self._start("subscribe", channel, route, ref, last_id)
        return Subscribe(ref=ref, channel=channel, route=route, last_id=last_id)

    # -- what the server does of its own -------------------------------------------------------

    def server_subscribe(self, channel: str) -> Subscribe | None:
        """A subscription the server makes (``auto_subscribe``), or None: no topic serves it, or the cap is reached."""
        self.state = self._connection_step("server_subscribe")
        if channel in self.subscriptions:
            self._step(channel, "server_subscribe")  # raises: the driver asks ``channel in subscriptions`` first
        route = self.resolve(channel)
        if route is None or len(self.subscriptions) >= self.max_subscriptions:
            return None
        self._start("server_subscribe", channel, route, None, None)
        return Subscribe(channel=channel, route=route)

    def server_unsubscribe(self, channel: str) -> Unsubscribe | None:
        """The server ends a joined subscription (a re-check found its topic now refuses), or None
        when there is nothing to end: the connection is closing, or the channel is not joined (a
        subscribe still joining, or a client's unsubscribe already leaving). The driver ends it,
        reports ``unsubscribed`` and tells the client with the ``unsubscribed`` frame."""
        subscription = self.subscriptions.get(channel)
        if self.state is CLOSING or subscription is None or subscription.state is not JOINED:
            return None
        self._step(channel, "server_unsubscribe")
        return Unsubscribe(channel=channel, route=subscription.route)

    def close(self) -> list[Unsubscribe]:
        """The connection ends: every subscription is leaving; the driver ends each and reports ``unsubscribed``."""
        self.state = self._connection_step("close")
        for channel in self.subscriptions:
            self._step(channel, "close")
        return [Unsubscribe(channel=s.channel, route=s.route) for s in self.subscriptions.values()]

    # -- what the driver reports back ----------------------------------------------------------

    def subscribed(self, channel: str) -> None:
        """The subscribe was carried out: the reply and the replay are sent, deliveries flow."""
        self._step(channel, "subscribed")

    def join_failed(self, channel: str) -> None:
        """The subscribe was refused or failed; what it had set up is undone."""
        self._step(channel, "join_failed")

    def unsubscribed(self, channel: str) -> None:
        """The subscription ended: its sinks are detached, presence left, ``on_unsubscribe`` called."""
        self._step(channel, "unsubscribed")

    # -- the tables ------------------------------------------------------------------------------

    def _start(self, step: str, channel: str, route: Route, ref: str | None, last_id: str | None) -> None:
        self._step(channel, step)
        self.subscriptions[channel] = Subscription(channel, route, JOINING, ref, last_id)

    def _connection_step(self, step: str) -> ConnectionState:
        try:
            return CONNECTION_TRANSITIONS[self.state, step]
        except KeyError:
            expected = _names(state for state, name in CONNECTION_TRANSITIONS if name == step)
            raise IllegalTransition(
                f"{step}() needs the connection {expected}; it is {self.state.value}"
            ) from None

    def _step(self, channel: str, step: str) -> None:
        subscription = self.subscriptions.get(channel)
        state = subscription.state if subscription is not None else None
        try:
            after = SUBSCRIPTION_TRANSITIONS[state, step]
        except KeyError:
            expected = _names(state for state, name in SUBSCRIPTION_TRANSITIONS if name == step)
            found = state.value if state is not None else "absent"
            raise IllegalTransition(
                f"{step}({channel!r}) needs the subscription {expected}; it is {found}"
            ) from None
        if after is None:
            del self.subscriptions[channel]
        elif subscription is not None:
            subscription.state = after


def _names(states: Any) -> str:
    """``joining or joined``; None reads as "absent" (no subscription)."""
    return " or ".join(state.value if state is not None else "absent" for state in states)


def _valid_ref(ref: Any) -> bool:
    return type(ref) is str and 0 < len(ref) <= MAX_REF_LENGTH


def resolver(topics: Sequence[Any]) -> Callable[[str], Route | None]:
    """Channel name → Route of the first topic whose pattern matches it."""

    def resolve(name: str) -> Route | None:
        for topic in topics:
            params = topic.match(name)
            if params is not None:
                return Route(topic, params)
        return None

    return resolve
