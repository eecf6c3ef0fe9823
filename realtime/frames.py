"""WebSocket frames as a server writes them (RFC 6455 section 5.2): unmasked, unfragmented.

Pure functions. A published message's frame is the same bytes for every recipient, so the direct
delivery path (:mod:`realtime.relay`) builds it once per publish and writes it to each transport.
"""

from __future__ import annotations

from typing import Any

from .encoding import SharedMessage, dumps

TEXT = 0x1
BINARY = 0x2


def frame(opcode: int, payload: bytes) -> bytes:
    """One final frame carrying ``payload``."""
    size = len(payload)
    first = 0x80 | opcode
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return bytes((first, 126)) + size.to_bytes(2, "big") + payload
    return bytes((first, 127)) + size.to_bytes(8, "big") + payload


def text_frame(text: str) -> bytes:
    """A text frame; ``text`` must be valid UTF-8 (see ``realtime.encoding.check_text``)."""
    return frame(TEXT, text.encode("utf-8"))


def binary_frame(data: bytes) -> bytes:
    return frame(BINARY, data)


def json_frame(message: Any, message_id: Any = None) -> bytes:
    """The text frame of ``message`` as JSON; built once for a SharedMessage and cached on it.

    Its signature is an encoder's (``realtime.pubsub.delivery``): the id is not part of the frame.
    """
    if type(message) is SharedMessage:
        if message.first_encoder is _json_frame:  # the cache's first entry, read inline: this runs per socket
            return message.first_value
        return message.encoded(_json_frame)
    return text_frame(dumps(message))


def _json_frame(message: SharedMessage, message_id: Any) -> bytes:
    return text_frame(dumps(message))
