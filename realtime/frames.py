"""WebSocket frames as a server writes them (RFC 6455 section 5.2): unmasked, unfragmented.

Pure functions. A published message's frame is the same bytes for every recipient, so the direct
delivery path (:mod:`realtime.relay`) builds it once per publish and writes it to each transport.
"""

from __future__ import annotations

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
