"""The vocabulary of the multi-channel protocol v1 (docs/protocol.md): events in, frames out.

:class:`realtime.topics.protocol.ServerProtocol` reads each decoded client frame into typed
events, as h11 reads bytes into ``Request``/``Data`` and wsproto into ``TextMessage``/``Ping``.
Some are answered by the machine itself (:class:`Ping`, :class:`Rejected`: send their ``frame``
as is, the way wsproto's ``Ping.response()`` hands back the pong); the others are requests whose
effects (permissions, channels, presence, tokens) only the driver can carry out.

The frame builders below are the server's side of the wire; every reply, error and gap of the
protocol is built here, so their bytes are the same whoever sends them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# -- frames the server sends -------------------------------------------------------------------


def reply(ref: Any, data: Any) -> dict[str, Any]:
    """The success reply to request ``ref``."""
    return {"op": "reply", "ref": ref, "ok": True, "data": data}


def error(ref: Any, code: str, detail: str) -> dict[str, Any]:
    """The error reply to request ``ref`` (``code`` from the table of docs/protocol.md)."""
    return {"op": "reply", "ref": ref, "ok": False, "error": {"code": code, "detail": detail}}


def gap(channel: str, missed: int | None) -> dict[str, Any]:
    """``missed`` messages were dropped; None: history could not reach back to the client's ``last_id``."""
    frame: dict[str, Any] = {"op": "gap", "channel": channel, "missed": missed}
    if missed is None:
        frame["recovered"] = False
    return frame


def unsubscribed(channel: str, code: str, detail: str) -> dict[str, Any]:
    """The server ended one subscription."""
    return {"op": "unsubscribed", "channel": channel, "reason": {"code": code, "detail": detail}}


# -- what the machine hands the driver -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """A channel name resolved to the topic class that serves it and the pattern's parameters."""

    topic: Any
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One thing the driver must do, read from a client frame or a step of the connection."""

    #: The client's ``ref``, echoed in the reply; None where no client request started it (the
    #: server's own subscriptions, the ones a closing connection leaves, a frame without a valid ref).
    ref: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FirstFrame(Event):
    """The client's first frame arrived: the first-message timer stops. Comes before that frame's event."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(Event):
    """``ping``: the machine's own answer is ``frame``."""

    @property
    def frame(self) -> dict[str, Any]:
        return reply(self.ref, {})


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected(Event):
    """A frame the protocol refuses by itself: send ``frame``; the connection and its subscriptions go on."""

    code: str
    detail: str

    @property
    def frame(self) -> dict[str, Any]:
        return error(self.ref, self.code, self.detail)


@dataclass(frozen=True, slots=True, kw_only=True)
class Connect(Event):
    """``connect``: authenticate the connection with ``token`` (accepted once per connection)."""

    token: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Refresh(Event):
    """``refresh``: swap the connection's token for ``token`` of the same user."""

    token: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscribe(Event):
    """Join ``channel``; the subscription is ``joining`` until the driver reports how it went."""

    channel: str
    route: Route
    #: The last id the client received: replay what came after it.
    last_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Unsubscribe(Event):
    """Leave ``channel``; the subscription is ``leaving`` until the driver reports it ended."""

    channel: str
    route: Route


@dataclass(frozen=True, slots=True, kw_only=True)
class Publish(Event):
    """Publish ``data`` on a joined ``channel`` whose topic accepts client publishes."""

    channel: str
    route: Route
    data: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Presence(Event):
    """Who is in a joined ``channel``."""

    channel: str
    route: Route
