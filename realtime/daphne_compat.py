"""Let daphne send every close code and reason that the WebSocket protocol allows.

daphne closes sockets through autobahn's ``sendClose``, which refuses every code but 1000 and
3000-4999 (so 1003, 1007, 1008, 1009, 1011 raise inside the server and the client never gets a
close frame), and daphne passes no reason at all. RFC 6455 lets a server send all of them; daphne
itself uses autobahn's lower-level ``sendCloseFrame`` for 1011. This patch routes the ASGI
``websocket.close`` message through that same call, with the reason. It is applied once, only when
daphne is the running server.

On SIGTERM it closes every WebSocket with 1001 before daphne cancels the applications (and
skips connections that have no application yet, where daphne's own shutdown raises ``KeyError``
and drops every socket without a close frame), then waits at most ``DRAIN_SECONDS``.

It also redacts ``token=`` values from daphne's HTTP access log, which prints the whole URI:
browsers' ``EventSource`` and ``WebSocket`` carry tokens in the query string; and it gives twisted
the reason phrases it lacks (``429 Too Many Requests``, not ``429 Unknown Status``).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

logger = logging.getLogger("realtime.shutdown")

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
    from daphne.http_protocol import WebRequest
    from daphne.server import Server

    from .daphne_flow import install

    install(Server, protocol, WebRequest)
    _redact_access_log()
    _graceful_shutdown(protocol)
    _reason_phrases()
    return True


def _reason_phrases() -> None:
    """twisted's status table stops at 418 (and skips 422, 428, 429, 431, 451...): daphne's status line
    then reads ``429 Unknown Status``. Add the standard library's phrase for every code it lacks."""
    from http import HTTPStatus

    from twisted.web import http

    for status in HTTPStatus:
        http.RESPONSES.setdefault(status.value, status.phrase.encode("ascii"))


#: How long a SIGTERM waits for applications to finish after telling every client.
DRAIN_SECONDS = 5.0


def _graceful_shutdown(websocket_protocol: type) -> None:
    import asyncio

    from daphne.server import Server
    from twisted.internet import defer

    from . import lifecycle

    def kill_all_applications(self: Any) -> Any:
        lifecycle.begin_shutdown()
        for protocol in list(self.connections):
            if isinstance(protocol, websocket_protocol) and protocol.state == protocol.STATE_OPEN:
                protocol.sendCloseFrame(code=1001, reasonUtf8=b"Server shutting down", isReply=False)
        instances = [
            details["application_instance"]
            for details in self.connections.values()
            if "application_instance" in details and not details["application_instance"].done()
        ]

        async def drain() -> None:
            await asyncio.sleep(0.2)  # let SSE streams send their last frame and close frames flush
            for instance in instances:
                instance.cancel()
            await asyncio.wait(instances, timeout=DRAIN_SECONDS) if instances else None

        logger.info("Shutting down: closing %d connection(s)", len(instances))
        deferred = defer.Deferred.fromFuture(asyncio.ensure_future(drain()))
        deferred.addErrback(lambda failure: None)
        return deferred

    Server.kill_all_applications = kill_all_applications


#: Query parameters whose values are never logged, compared on the *decoded* name (``%74oken``
#: reaches the application as ``token``, so it must be redacted too).
SECRET_PARAMS = frozenset({"token", "access_token", "access", "refresh", "refresh_token"})
_QUERY_PARAM = re.compile(r"([?&;])([^=&;#\s]*)(=?)([^&;#\s]*)")


def redact(path: str) -> str:
    """``/events?token=abc&x=1`` → ``/events?token=[redacted]&x=1``; ``?%74oken=abc`` too."""
    from urllib.parse import unquote_plus

    head, mark, query = path.partition("?")
    if not mark:
        return path

    def hide(match: re.Match[str]) -> str:
        name = unquote_plus(match[2]).strip().lower()
        if match[3] and name in SECRET_PARAMS:
            return f"{match[1]}{match[2]}=[redacted]"
        return match[0]

    return head + _QUERY_PARAM.sub(hide, "?" + query)


def _redact_access_log() -> None:
    """daphne's HTTP access log prints the full URI, query string included: tokens travel there."""
    from daphne.access import AccessLogGenerator

    original = AccessLogGenerator.__call__

    def log(self: Any, protocol: str, action: str, details: dict[str, Any]) -> None:
        if isinstance(details.get("path"), str):
            details = {**details, "path": redact(details["path"])}
        original(self, protocol, action, details)

    AccessLogGenerator.__call__ = log
