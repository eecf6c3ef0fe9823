"""What a subscription yields (``Snapshot``, ``Message``, ``Gap``, ``Join``, ``Leave``) and the client's one error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class RealtimeError(Exception):
    """A refused request (the server's ``code``: ``forbidden``, ``refused`` ...) or a local failure:
    ``timeout``, ``disconnected`` (the socket dropped while the request was out: it may or may not
    have been carried out), ``closed``."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Message:
    """A message of the channel; ``id`` is its history id (None on a topic without history)."""

    channel: str
    id: str | None
    data: Any


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages were lost: ``missed`` of them (None: unknown). ``recovered`` False means the history
    could not reach back to the last id: refetch the state. A gap with ``missed`` is a slow reader's:
    the server's queue (or this client's buffer) dropped the oldest."""

    channel: str
    missed: int | None
    recovered: bool = True


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The topic's state when the channel was joined, current to history id ``last_id`` (None: before
    any message); the messages that follow are exactly those after it. Replace your state with ``data``."""

    channel: str
    data: Any
    last_id: str | None


@dataclass(frozen=True, slots=True)
class Join:
    """A user's first connection to the channel (``member``: ``{"id", "info", "connections"}``)."""

    channel: str
    member: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Leave:
    """A user's last connection to the channel ended."""

    channel: str
    member: dict[str, Any]


Event = Snapshot | Message | Gap | Join | Leave
