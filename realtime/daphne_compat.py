"""Let daphne send every close code and reason that the WebSocket protocol allows.

daphne closes sockets through autobahn's ``sendClose``, which refuses every code but 1000 and
3000-4999 (so 1003, 1007, 1008, 1009, 1011 raise inside the server and the client never gets a
close frame), and daphne passes no reason at all. RFC 6455 lets a server send all of them; daphne
itself uses autobahn's lower-level ``sendCloseFrame`` for 1011. This patch routes the ASGI
``websocket.close`` message through that same call, with the reason. It is applied once, only when
daphne is the running server.

It also redacts ``token=`` values from daphne's HTTP access log, which prints the whole URI:
browsers' ``EventSource`` and ``WebSocket`` carry tokens in the query string.
"""

from __future__ import annotations

import re
import sys
from typing import Any

#: Codes an endpoint may put in a close frame (RFC 6455 section 7.4, IANA registry).
SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def is_sendable(code: int) -> bool:
    return code in SENDABLE_CODES or 3000 <= code <= 4999


def patch_daphne() -> bool:
    """Install the patch if daphne's WebSocket protocol is loaded; True when installed."""
    module = sys.modules.get("daphne.ws_protocol")
    if module is None:
        return False
    protocol = module.WebSocketProtocol
    if getattr(protocol, "_realtime_patched", False):
        return True
    from autobahn.util import encode_truncate

    original = protocol.handle_reply

    def handle_reply(self: Any, message: dict[str, Any]) -> None:
        if message.get("type") == "websocket.close" and self.state != self.STATE_CONNECTING:
            code = message.get("code") or 1000
            reason = message.get("reason") or None
            self.sendCloseFrame(
                code=int(code), reasonUtf8=encode_truncate(reason, 123) if reason else None, isReply=False
            )
            return
        original(self, message)

    protocol.handle_reply = handle_reply
    protocol._realtime_patched = True
    _redact_access_log()
    return True


_SECRET_PARAMS = re.compile(r"([?&](?:token|access_token|access)=)[^&#\s]*", re.IGNORECASE)


def redact(path: str) -> str:
    """``/events?token=abc&x=1`` → ``/events?token=[redacted]&x=1``."""
    return _SECRET_PARAMS.sub(r"\1[redacted]", path)


def _redact_access_log() -> None:
    """daphne's HTTP access log prints the full URI, query string included: tokens travel there."""
    from daphne.access import AccessLogGenerator

    original = AccessLogGenerator.__call__

    def log(self: Any, protocol: str, action: str, details: dict[str, Any]) -> None:
        if isinstance(details.get("path"), str):
            details = {**details, "path": redact(details["path"])}
        original(self, protocol, action, details)

    AccessLogGenerator.__call__ = log
