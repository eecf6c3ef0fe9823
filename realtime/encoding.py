"""JSON encoding shared by WebSocket and SSE, encoded once per published message.

A message published on a :class:`~realtime.Channel` reaches every local subscriber as the same
:class:`SharedMessage` object. Its JSON text is computed the first time any subscriber sends it
and reused by all the others, so a fan-out to N sockets encodes once, not N times. Shared messages
must be treated as read-only by subscribers.
"""

from __future__ import annotations

import json
from typing import Any

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class SharedMessage(dict):
    """A published dict, shared by all subscribers, that caches its own JSON text."""

    __slots__ = ("_event", "_json", "_sse", "id")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._json: str | None = None
        #: The ASGI ``websocket.send`` event carrying ``_json``, also built once and shared.
        self._event: dict[str, Any] | None = None
        #: The SSE frame ``data: <json>`` of a ``{"data": message}`` event, also built once.
        self._sse: bytes | None = None
        self.id: str | None = None


def dumps(data: Any) -> str:
    """Compact JSON text (UTF-8 kept as is); cached for :class:`SharedMessage`."""
    if type(data) is SharedMessage:
        text = data._json
        if text is None:
            text = data._json = _encoder.encode(data)
        return text
    return _encoder.encode(data)


def loads(text: str | bytes) -> Any:
    """Parse JSON; raises ``ValueError`` on malformed input."""
    return json.loads(text)


def send_event(data: Any) -> dict[str, Any]:
    """The ASGI ``websocket.send`` text event for ``data``; one shared dict per SharedMessage.

    ASGI servers read the events they are given; like the JSON text, the event of a shared
    message is built once per publish and handed to every subscriber's ``send``.
    """
    if type(data) is SharedMessage:
        event = data._event
        if event is None:
            event = data._event = {"type": "websocket.send", "text": dumps(data)}
        return event
    return {"type": "websocket.send", "text": _encoder.encode(data)}
