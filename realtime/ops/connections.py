"""One record per open WebSocket or SSE stream; when it ends, its totals and one log line.

The views call :func:`track_websocket` / :func:`track_sse` once when a connection starts and
``record.close()`` once when it ends. While it is open the record is the current one of its tasks
(a context variable), so the Channel subscriptions it makes are counted as its own: their drops
appear in its log line.

The log line (logger ``realtime.connections``, level INFO) carries the endpoint's route pattern,
the user's id (never a token), the duration, the close code and who closed, the messages in and
out and the messages dropped; the same fields are in the record's ``realtime`` attribute for
:class:`realtime.ops.logs.JSONFormatter`.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import sys
import time
from typing import Any

from ..conf import setting
from ..lifecycle import shutting_down
from .stats import stats

logger = logging.getLogger("realtime.connections")

#: The connection whose task is running (None outside connections).
current: contextvars.ContextVar[ConnectionRecord | None] = contextvars.ContextVar("realtime_connection", default=None)
#: The HTTP request being served by CoreApp: its scope, send guard and (for SSEView) user.
current_http: contextvars.ContextVar[HttpContext | None] = contextvars.ContextVar("realtime_http", default=None)

#: Open connections (handshakes included), insertion-ordered: the records, not counters, so kept here.
live: dict[ConnectionRecord, None] = {}

_sequence = itertools.count()
#: Subscriptions a record keeps before it folds those that have ended into its total.
_COMPACT_AT = 16


class HttpContext:
    """What CoreApp knows of an HTTP request, for the SSE stream it may become."""

    __slots__ = ("guard", "scope", "user")

    def __init__(self, scope: dict[str, Any], guard: Any) -> None:
        self.scope = scope
        self.guard = guard
        self.user: Any = None


class ConnectionRecord:
    """One open connection, as operations see it."""

    __slots__ = ("_accepted", "by", "code", "dropped_done", "endpoint", "guard", "protocol", "received", "refused",
                 "sent", "started", "subscriptions", "user", "view", "ws")

    def __init__(self, protocol: str, endpoint: str, guard: Any) -> None:
        self.protocol = protocol
        self.endpoint = endpoint
        self.guard = guard
        self.started = time.monotonic()
        self.ws: Any = None
        self.view: Any = None
        self.user: Any = None
        #: An SSE stream is open once its record exists; a WebSocket once its handshake is accepted.
        self._accepted = protocol == "sse"
        self.refused = False
        #: SSE frames sent (a WebSocket counts on its ``ws``).
        self.sent = 0
        self.received = 0
        #: A list once there is one: most WebSockets subscribe to nothing (a relay is counted on its ws).
        self.subscriptions: list[tuple[Any, Any]] | tuple[()] = ()
        self.dropped_done = 0
        self.code: str = "-"
        self.by: str = "-"

    # -- live figures -------------------------------------------------------------------------

    @property
    def accepted(self) -> bool:
        return self._accepted or (self.ws is not None and self.ws.accepted)

    @property
    def open(self) -> bool:
        """Accepted and not ended (a handshake in progress is not open yet)."""
        if self.ws is not None:
            return self.accepted and self.ws.client_state.name == "CONNECTED"
        return True

    def messages_out(self) -> int:
        return self.ws.sent if self.ws is not None else self.sent

    def messages_in(self) -> int:
        return self.ws.received if self.ws is not None else self.received

    def dropped(self) -> int:
        """Messages this connection's subscriptions dropped because it fell behind."""
        return self.dropped_done + sum(getattr(sink, "dropped", 0) for _, sink in self.subscriptions)

    def adopt(self, channel: Any, sink: Any) -> None:
        """A subscription made by this connection."""
        subscriptions = self.subscriptions
        if type(subscriptions) is tuple:
            subscriptions = self.subscriptions = []
        elif len(subscriptions) >= _COMPACT_AT:
            kept = []
            for pair in subscriptions:
                if pair[0].is_attached(pair[1]):
                    kept.append(pair)
                else:
                    self.dropped_done += getattr(pair[1], "dropped", 0)
            self.subscriptions = subscriptions = kept
        subscriptions.append((channel, sink))

    def user_id(self) -> Any:
        user = self.view.user if self.view is not None else self.user
        return getattr(user, "pk", None) if user is not None else None

    # -- the end ------------------------------------------------------------------------------

    def close(self) -> None:
        """Called once when the connection ends: totals, counters and the log line."""
        if live.pop(self, 0) is not None:
            return
        duration = time.monotonic() - self.started
        slow = bool(getattr(self.guard, "slow", False))
        if self.ws is not None:
            self.code, self.by = websocket_end(self.ws, slow)
        else:
            self.code, self.by = sse_end(slow, sys.exception())
        if slow:
            stats.slow_consumers[self.protocol] += 1
        if self.refused or getattr(self.ws, "refused", False) or not self.accepted:
            stats.refuse(self.protocol, self.code)
            return
        totals = stats.ended[(self.endpoint, self.protocol)]
        sent, received, dropped = self.messages_out(), self.messages_in(), self.dropped()
        totals.connections += 1
        totals.sent += sent
        totals.received += received
        totals.dropped += dropped
        totals.duration.observe(duration)
        stats.closed[(self.protocol, self.code, self.by)] += 1
        fields = {
            "event": "connection_end", "protocol": self.protocol, "endpoint": self.endpoint,
            "user": self.user_id(), "duration": round(duration, 3), "code": self.code, "closed_by": self.by,
            "messages_in": received, "messages_out": sent, "dropped": dropped,
        }
        logger.info(
            "%s ended endpoint=%s user=%s duration=%.3fs code=%s closed_by=%s in=%d out=%d dropped=%d",
            self.protocol, self.endpoint, fields["user"] if fields["user"] is not None else "-", duration,
            self.code, self.by, received, sent, dropped, extra={"realtime": fields},
        )

    def __repr__(self) -> str:
        return f"<ConnectionRecord {self.protocol} {self.endpoint}>"


def websocket_end(ws: Any, slow: bool) -> tuple[str, str]:
    """How a WebSocket ended, for the counters and the log line: its close code and who closed first."""
    inbound = getattr(ws, "inbound", None)
    if inbound is not None and inbound.overflowed is not None:
        # condemned by its inbound bound first: its 1008 close may then wait behind a send to a client
        # that does not read, until the slow-consumer policy also gives up on it
        return str(ws.close_code or 1008), "server"
    if slow:
        return "4008", "server"
    code = ws.close_code
    if code == 1001 and shutting_down():  # daphne (patched) closed every socket itself, on SIGTERM
        return "1001", "server"
    return (str(code) if code is not None else "1006"), (getattr(ws, "closed_by", None) or "client")


def sse_end(slow: bool, error: BaseException | None) -> tuple[str, str]:
    """An SSE stream has no close code: how it ended stands in (``end``, ``slow_consumer``, ``disconnect``)."""
    if slow:
        return "slow_consumer", "server"
    if error is None:
        return "end", "server"
    return "disconnect", "client"


# -- called by the views ------------------------------------------------------------------------


def track_websocket(view: Any, ws: Any) -> ConnectionRecord:
    """Start the record of a WebSocket connection (before its handshake is decided)."""
    route = ws.scope.get("url_route", {}).get("route")
    # Interned: one string per route pattern, not one per connection.
    endpoint = sys.intern("/" + route) if route else "-"
    record = ConnectionRecord("websocket", endpoint, getattr(ws._send, "__self__", None))
    record.ws = ws
    record.view = view
    sample = setting("METRICS_LATENCY_SAMPLE")
    if sample and next(_sequence) % int(sample) == 0:
        ws.latency = stats.latency  # send_json observes publish-to-send latency of published messages
    live[record] = None
    current.set(record)
    return record


def track_sse() -> ConnectionRecord:
    """Start the record of an SSE stream whose headers are on their way."""
    http = current_http.get()
    record = ConnectionRecord("sse", _sse_route(http), http.guard if http is not None else None)
    record.user = http.user if http is not None else None
    live[record] = None
    current.set(record)
    return record


def sse_user(user: Any) -> None:
    """SSEView tells whose stream this request is."""
    http = current_http.get()
    if http is not None:
        http.user = user


def adopt(channel: Any, sink: Any) -> None:
    """Channel.attach: a subscription of the current connection, if any."""
    record = current.get()
    if record is not None:
        record.adopt(channel, sink)


def _sse_route(http: HttpContext | None) -> str:
    if http is None:
        return "-"
    from django.urls import Resolver404, resolve

    try:
        return "/" + resolve(http.scope["path"]).route
    except Resolver404:
        return "-"
