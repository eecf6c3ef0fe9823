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
from collections.abc import Callable
from typing import Any, TypeVar

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


_MISSING: Any = object()
T = TypeVar("T")


class SharedMessage(dict):
    """A published dict, shared by all subscribers, that caches its JSON text and its encodings.

    Each transport's encoder (a WebSocket frame, an ASGI event, an SSE frame, a topics envelope)
    runs once per publish through :meth:`encoded`, whatever the number of subscribers: the cache is
    keyed by encoder, as Phoenix's fastlane caches by serializer, so this module knows none of them.
    """

    __slots__ = ("_json", "_more", "first_encoder", "first_id", "first_value", "id", "published_at")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._json: str | None = None
        #: The first encoding made (nearly always the only one): an encoder on a per-subscriber hot
        #: path may read these three inline before calling :meth:`encoded`. Others go in ``_more``.
        self.first_encoder: Any = None
        self.first_id: Any = None
        self.first_value: Any = None
        self._more: dict[tuple[Any, Any], Any] | None = None
        self.id: str | None = None
        #: ``time.perf_counter()`` when published in this process (realtime.ops measures latency from it).
        self.published_at: float | None = None

    def encoded(self, encoder: Callable[[Any, Any], T], message_id: Any = None) -> T:
        """``encoder(self, message_id)``, computed once per encoder and id, then shared.

        ``encoder`` must be a long-lived object (a module function, or one per channel or view):
        the cache compares it by identity. The id is part of the key because the same object may
        be published again, on this channel or another, with a new id.
        """
        if self.first_encoder is encoder and self.first_id == message_id:
            return self.first_value
        more = self._more
        if more is not None:
            value = more.get((encoder, message_id), _MISSING)
            if value is not _MISSING:
                return value
        value = encoder(self, message_id)
        if self.first_encoder is None:
            self.first_encoder, self.first_id, self.first_value = encoder, message_id, value
        else:
            if more is None:
                more = self._more = {}
            more[(encoder, message_id)] = value
        return value



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
        return data.encoded(_text_event)
    return {"type": "websocket.send", "text": _encode(data)}


def _text_event(message: SharedMessage, message_id: Any) -> dict[str, Any]:
    return {"type": "websocket.send", "text": dumps(message)}
