"""The Server-Sent Events wire format, as a pure function (WHATWG HTML, "server-sent events").

- ``data``: a ``str`` is sent as is, one ``data:`` line per line (CR, LF and CRLF all split, so line
  breaks arrive as LF: the format cannot carry a CR; send a dict to keep one). A ``dict`` or
  ``list`` is sent as compact JSON, which never contains a raw line break.
- ``event`` and ``id``: a CR, LF or NUL would end the field or be ignored by browsers, so they are
  **rejected** with ``ValueError`` rather than silently stripped.
- ``retry``: a non-negative integer number of milliseconds.
- Text that is not valid UTF-8 (a lone surrogate) and data that is not strict JSON (NaN,
  infinities) raise ``UnencodableMessage`` (a ``ValueError``), as on every other send path.
"""

from __future__ import annotations

import re
from typing import Any

from .encoding import SharedMessage, check_text, dumps

_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
_FORBIDDEN_IN_FIELD = re.compile(r"[\r\n\x00]")
_KEYS = frozenset({"data", "event", "id", "retry", "comment"})

PING = b": ping\n\n"
#: The first frame of every stream (a comment: EventSource ignores it).
OPENED = b": connected\n\n"
#: Sent to every stream when the server shuts down: reconnect in about a second.
SHUTDOWN = b"retry: 1000\n: server shutting down\n\n"


def _field(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"SSE '{name}' must be a str, not {type(value).__name__}")
    if _FORBIDDEN_IN_FIELD.search(value):
        raise ValueError(f"SSE '{name}' must not contain CR, LF or NUL: {value!r}")
    return value


def encode_event(
    data: Any,
    event: str | None = None,
    id: str | None = None,  # noqa: A002 - the field's name in the SSE format
    retry: int | None = None,
    comment: str | None = None,
) -> str:
    """One SSE frame, ending with the blank line that dispatches it."""
    lines: list[str] = []
    if comment is not None:
        lines.extend(f": {line}" for line in _LINE_BREAKS.split(str(comment)))
    if event is not None:
        lines.append(f"event: {_field('event', event)}")
    if id is not None:
        lines.append(f"id: {_field('id', id)}")
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int):
            raise TypeError(f"SSE 'retry' must be an int (milliseconds), not {type(retry).__name__}")
        if retry < 0:
            raise ValueError(f"SSE 'retry' must be >= 0, not {retry}")
        lines.append(f"retry: {retry}")
    if isinstance(data, str):
        text = data
    elif isinstance(data, (dict, list)):
        text = dumps(data)
    else:
        raise TypeError(f"SSE 'data' must be a str, dict or list, not {type(data).__name__}")
    lines.extend(f"data: {line}" for line in _LINE_BREAKS.split(text))
    return "\n".join(lines) + "\n\n"


def encode_item(item: Any) -> bytes:
    """Encode what an SSE stream yields: a dict with ``data`` and optional ``event``, ``id``, ``retry``."""
    if not isinstance(item, dict):
        raise TypeError(
            f"SSE streams yield dicts like {{'event': 'update', 'data': ...}}, not {type(item).__name__}"
        )
    unknown = item.keys() - _KEYS
    if unknown:
        raise TypeError(f"Unknown SSE field(s) {sorted(unknown)}; use data, event, id, retry")
    if "data" not in item:
        raise TypeError("An SSE event needs 'data'")
    event_id = item.get("id")
    if event_id is not None and not isinstance(event_id, str):
        event_id = str(event_id) if isinstance(event_id, int) and not isinstance(event_id, bool) else event_id
    return check_text(
        encode_event(item["data"], item.get("event"), event_id, item.get("retry"), item.get("comment"))
    ).encode("utf-8")


#: Sent when a stream's generator raised: the error is logged, the client reconnects.
FAILED = encode_event({"code": "internal_error", "detail": "The stream failed; reconnect"}, event="error").encode()


def data_frame(message: Any, message_id: Any = None) -> bytes:
    """The frame of ``{"data": message}``, as a generic stream sends it (no id); an encoder's signature
    (``realtime.pubsub.delivery``), and the same cache entry on a shared message as the generic path's."""
    if type(message) is SharedMessage:
        if message.first_encoder is _data_frame:  # the cache's first entry, read inline: this runs per stream
            return message.first_value
        return message.encoded(_data_frame)
    return encode_item({"data": message})


def _data_frame(message: SharedMessage, message_id: Any) -> bytes:
    return encode_item({"data": message})
