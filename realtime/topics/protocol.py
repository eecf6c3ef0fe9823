"""The multi-channel protocol v1 (docs/protocol.md) as a sans-IO state machine, in the manner of h11.

:class:`ServerProtocol` takes decoded client frames and returns either a frame to send now (an
error reply, the reply to ``ping``) or a request for the driver to carry out (check permissions,
subscribe, publish ...). The driver reports back what it did (``subscribed``, ``unsubscribed``,
``connected``), which is the only state: the channels this connection has joined and whether it
has connected. No sockets, no awaits, no Django: every rule here is tested from tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

VERSION = 1
SUBPROTOCOL = "realtime.v1"
MAX_REF_LENGTH = 32
MAX_CHANNEL_LENGTH = 200
OPS = ("connect", "subscribe", "unsubscribe", "publish", "presence", "refresh", "ping")


@dataclass(frozen=True)
class Route:
    """A channel name resolved to the topic class that serves it and the pattern's parameters."""

    topic: Any
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """Something the driver must do, then answer ``ref`` with ``reply``/``error``."""

    op: str
    ref: str
    channel: str | None = None
    route: Route | None = None
    data: Any = None
    last_id: str | None = None
    token: str | None = None


class ProtocolError(Exception):
    """A request refused by the protocol itself; ``code`` is the reply's error code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


# -- frames the server sends -------------------------------------------------------------------


def reply(ref: Any, data: Any) -> dict[str, Any]:
    return {"op": "reply", "ref": ref, "ok": True, "data": data}


def error(ref: Any, code: str, detail: str) -> dict[str, Any]:
    return {"op": "reply", "ref": ref, "ok": False, "error": {"code": code, "detail": detail}}


def gap(channel: str, missed: int | None) -> dict[str, Any]:
    frame: dict[str, Any] = {"op": "gap", "channel": channel, "missed": missed}
    if missed is None:
        frame["recovered"] = False
    return frame


def unsubscribed(channel: str, code: str, detail: str) -> dict[str, Any]:
    return {"op": "unsubscribed", "channel": channel, "reason": {"code": code, "detail": detail}}


# -- the state machine -------------------------------------------------------------------------


class ServerProtocol:
    """One connection's protocol state; ``receive(frame)`` → a frame to send, or a Request."""

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
        #: Joined channels → their routes.
        self.subscriptions: dict[str, Route] = {}
        self.connect_seen = False

    def receive(self, frame: Any) -> dict[str, Any] | Request:
        """The reply to send now, or the Request the driver carries out."""
        ref = frame.get("ref") if type(frame) is dict else None
        try:
            return self._request(frame)
        except ProtocolError as refusal:
            return error(ref if _valid_ref(ref) else None, refusal.code, refusal.detail)

    def _request(self, frame: Any) -> dict[str, Any] | Request:
        if type(frame) is not dict:
            raise ProtocolError("bad_request", "A frame is a JSON object")
        ref = frame.get("ref")
        if not _valid_ref(ref):
            raise ProtocolError("bad_request", f"'ref' must be a string of 1 to {MAX_REF_LENGTH} characters")
        op = frame.get("op")
        if op not in OPS:
            raise ProtocolError("unknown_op", f"Unknown op {op!r}; known: {', '.join(OPS)}")
        if op == "ping":
            return reply(ref, {})
        if op in ("connect", "refresh"):
            token = frame.get("token")
            if type(token) is not str:
                raise ProtocolError("bad_request", f"'{op}' needs a 'token' string")
            if op == "connect":
                if self.connect_seen:
                    raise ProtocolError("bad_request", "'connect' may be sent once")
                self.connect_seen = True
            return Request(op, ref, token=token)
        channel = frame.get("channel")
        if type(channel) is not str or not channel:
            raise ProtocolError("bad_request", f"'{op}' needs a 'channel' string")
        if len(channel) > self.max_channel_length:
            raise ProtocolError("unknown_channel", f"Channel names are at most {self.max_channel_length} characters")
        if op == "subscribe":
            return self._subscribe(ref, channel, frame)
        route = self.subscriptions.get(channel)
        if route is None:
            if self.resolve(channel) is None:
                raise ProtocolError("unknown_channel", f"No topic serves {channel!r}")
            raise ProtocolError("not_subscribed", f"Not subscribed to {channel!r}")
        if op == "publish":
            if "data" not in frame:
                raise ProtocolError("bad_request", "'publish' needs 'data'")
            if not self.publishable(route):
                raise ProtocolError("publish_not_allowed", f"Clients may not publish on {channel!r}")
            return Request(op, ref, channel, route, data=frame["data"])
        return Request(op, ref, channel, route)

    def _subscribe(self, ref: str, channel: str, frame: dict[str, Any]) -> Request:
        last_id = frame.get("last_id")
        if last_id is not None and (type(last_id) is not str or len(last_id) > 64):
            raise ProtocolError("bad_request", "'last_id' must be a string (the last message id received)")
        route = self.resolve(channel)
        if route is None:
            raise ProtocolError("unknown_channel", f"No topic serves {channel!r}")
        if channel in self.subscriptions:
            raise ProtocolError("already_subscribed", f"Already subscribed to {channel!r}")
        if len(self.subscriptions) >= self.max_subscriptions:
            raise ProtocolError(
                "too_many_subscriptions", f"At most {self.max_subscriptions} channels on one connection"
            )
        return Request("subscribe", ref, channel, route, last_id=last_id)

    # -- what the driver reports back ------------------------------------------------------------

    def subscribed(self, channel: str, route: Route) -> None:
        """The driver joined ``channel`` (a client's request, or a server-side subscription)."""
        self.subscriptions[channel] = route

    def unsubscribed(self, channel: str) -> None:
        """The subscription to ``channel`` ended."""
        self.subscriptions.pop(channel, None)

    def can_subscribe(self) -> bool:
        """Room for one more subscription under the cap."""
        return len(self.subscriptions) < self.max_subscriptions


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
