"""JSON encoding shared by WebSocket and SSE, encoded once per published message.

A message published on a :class:`~realtime.Channel` reaches every local subscriber as the same
:class:`SharedMessage` object. Its JSON text is computed the first time any subscriber sends it
and reused by all the others, so a fan-out to N sockets encodes once, not N times. Shared messages
must be treated as read-only by subscribers.

Everything sent is **strict JSON in valid UTF-8**: NaN and the infinities (which ``json`` would
write as ``NaN``/``Infinity``, text no JSON parser accepts) and lone surrogates such as
``"\\ud800"`` (which cannot be encoded as UTF-8, so the server would fail mid-send) raise
:class:`UnencodableMessage`, a ``ValueError``, where the message is made: at ``Channel.publish``
for the publisher, at ``send_json`` for the caller. What a client sends is held to the same rule
by :func:`loads` (the view closes with 1007).
"""

from __future__ import annotations

import json
import time
from typing import Any

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class UnencodableMessage(ValueError):
    """A message that cannot go on the wire as strict JSON in UTF-8; nothing was sent."""


def check_text(text: str) -> str:
    """``text`` itself if it encodes as UTF-8; else UnencodableMessage (a lone surrogate)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise UnencodableMessage(
                f"Text holds a lone surrogate ({text[error.start:error.end]!r} at {error.start}), "
                "which is not valid UTF-8"
            ) from None
    return text


def _encode(data: Any) -> str:
    try:
        return check_text(_encoder.encode(data))
    except UnencodableMessage:
        raise
    except (ValueError, TypeError, RecursionError) as error:
        raise UnencodableMessage(f"Not sendable as strict JSON: {error}") from error


class SharedMessage(dict):
    """A published dict, shared by all subscribers, that caches its own JSON text."""

    __slots__ = ("_envelope", "_event", "_frame", "_json", "_sse", "_sse_relay", "_topic_frame", "id", "published_at")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._json: str | None = None
        #: The ASGI ``websocket.send`` event carrying ``_json``, also built once and shared.
        self._event: dict[str, Any] | None = None
        #: The SSE frame ``data: <json>`` of a ``{"data": message}`` event, also built once.
        self._sse: bytes | None = None
        #: The WebSocket text frame carrying ``_json``, for the direct delivery path.
        self._frame: bytes | None = None
        #: ``(event, frame)``: the SSE frame with this message's id, for SSE relay views.
        self._sse_relay: tuple[str | None, bytes] | None = None
        #: ``(channel, id, event)``: the ``websocket.send`` event of its multi-channel
        #: ``{"op": "message", ...}`` frame (realtime.topics). Keyed, because the same object may be
        #: published again on another channel (a subscriber that republishes what it received).
        self._envelope: tuple[str, str | None, dict[str, Any]] | None = None
        #: ``(channel, id, frame)``: that envelope as WebSocket frame bytes, for the topics' direct path.
        self._topic_frame: tuple[str, str | None, bytes] | None = None
        self.id: str | None = None
        #: ``time.perf_counter()`` when published in this process (realtime.ops measures latency from it).
        self.published_at: float | None = None


def dumps(data: Any) -> str:
    """Compact JSON text (UTF-8 kept as is); cached for :class:`SharedMessage`."""
    if type(data) is SharedMessage:
        text = data._json
        if text is None:
            text = data._json = _encode(data)
        return text
    return _encode(data)


def wire_safe(message: Any) -> Any:
    """What ``Channel.publish`` fans out: a dict becomes a SharedMessage with its JSON made now.

    Raises UnencodableMessage for anything that is not strict JSON in UTF-8, before any
    subscriber or the history sees it.
    """
    if type(message) is dict:
        shared = SharedMessage(message)
        dumps(shared)
        shared.published_at = time.perf_counter()
        return shared
    if type(message) is str:
        return check_text(message)
    _encode(message)
    return message


def _finite(text: str) -> float:
    value = float(text)
    if value in (_INF, -_INF):
        raise ValueError(f"Number out of range: {text}")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_INF = float("inf")
_decoder = json.JSONDecoder(parse_float=_finite, parse_constant=_refuse_constant)


def loads(text: str | bytes) -> Any:
    """Parse strict JSON; ``ValueError`` on malformed input, NaN, infinities or lone surrogates."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    value = _decoder.decode(text)
    if "\\u" in text:  # only escapes can make a lone surrogate
        _check_strings(value)
    return value


def _check_strings(value: Any) -> None:
    if type(value) is str:
        check_text(value)
    elif type(value) is dict:
        for key, item in value.items():
            check_text(key)
            _check_strings(item)
    elif type(value) is list:
        for item in value:
            _check_strings(item)


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
    return {"type": "websocket.send", "text": _encode(data)}
