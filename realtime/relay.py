"""The direct delivery path: a WebSocketView that relays a Channel (``relay = ticks``).

The general ``stream()`` hook runs user code per socket: every published message wakes one task
per socket (the push task, the generator, the subscription), and goes through the ASGI ``send``.
A relay needs none of that. Its :class:`RelaySink` is the Channel subscriber itself: when a
message is published, ``offer`` writes the message's WebSocket frame, built once per publish and
cached on the shared message, straight to the socket's transport (``realtime.servers`` finds it),
in the publisher's own loop turn, with no task woken.

When it cannot (another server, a transport pushing back, a message still queued), the message
goes to the sink's bounded drop-oldest queue and one drain task sends the queue through the
ordinary ASGI path, which waits for the client and applies the slow-consumer policy
(``realtime.flow``). Order is kept: nothing is written directly while anything is queued. Drops
are counted (``dropped``) and, if the view's ``relay_gap`` returns a message, signalled to the
client before the next message.

A ``relay_message`` or ``relay_gap`` that raises, or returns what JSON cannot encode, ends that
socket as a failing ``stream()`` does: the error is logged and the client gets 1011. The channel's
other subscribers are not touched.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from .connection import CloseCode, WebSocketDisconnect
from .encoding import check_text
from .frames import binary_frame, json_frame, text_frame

if TYPE_CHECKING:
    from .connection import WebSocket
    from .websocket import WebSocketView

logger = logging.getLogger("realtime.relay")

class RelaySink:
    """One socket's subscription to its view's ``relay`` channel."""

    __slots__ = ("__weakref__", "_drain", "_waiter", "channel", "dropped", "encoding", "failed", "items",
                 "maxlen", "reported", "transform", "view", "writer", "ws")

    def __init__(self, view: WebSocketView, ws: WebSocket, writer: Any, channel: Any) -> None:
        self.view = view
        self.channel = channel
        self.ws = ws
        self.writer = writer
        self.encoding = view.encoding
        # The default relay_message is the identity: skip the call on the hot path.
        self.transform = None if type(view).relay_message is _identity_hook() else view.relay_message
        #: Messages waiting for the ASGI path. An empty deque costs 760 bytes, so a socket that
        #: has never been pushed back shares this empty tuple instead.
        self.items: deque[Any] | tuple[()] = ()
        self.maxlen = channel.maxlen
        self.dropped = 0
        self.reported = 0
        self.failed = False
        self._drain: asyncio.Task[None] | None = None
        #: Where the drain task parks between messages when there is no direct writer (uvicorn).
        self._waiter: asyncio.Future[None] | None = None

    def offer(self, message: Any, message_id: str | None) -> None:
        """Called by the Channel for each published message, in the publisher's loop turn."""
        if self.failed:
            return
        items = self.items
        try:
            if self.transform is not None:
                message = self.transform(message)
                if message is None:
                    return
            if not items and self._drain is None:
                writer = self.writer
                if writer is not None and writer.ready():
                    writer.write(self._frame(message))
                    self.ws.sent += 1  # counted as the ASGI path counts its sends (realtime.ops)
                    return
        except Exception:
            self._fail()
            return
        if type(items) is not deque:
            items = self.items = deque()
        elif len(items) >= self.maxlen:
            items.popleft()
            self.dropped += 1
        items.append(message)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        elif self._drain is None:
            self._drain = self.view._spawn(self._send_queued())

    def _frame(self, message: Any) -> bytes:
        if self.encoding == "json":
            return json_frame(message)
        if self.encoding == "text":
            return text_frame(check_text(message))
        return binary_frame(message)

    async def _send_queued(self) -> None:
        ws = self.ws
        send = {"json": ws.send_json, "text": ws.send_text, "bytes": ws.send_bytes}[self.encoding]
        items = self.items
        try:
            while True:
                while items:
                    if self.dropped > self.reported:
                        missed, self.reported = self.dropped - self.reported, self.dropped
                        notice = self.view.relay_gap(missed)
                        if notice is not None:
                            await send(notice)
                    await send(items.popleft())
                if self.writer is not None:
                    self.items = ()  # the direct path takes over again
                    return
                # No direct path on this server: park until the next message rather than end,
                # so a publish costs one wake-up per socket, not a new task.
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
        except WebSocketDisconnect:
            self._forget()
        except Exception:
            self._fail()
        finally:
            self._drain = None
            self._waiter = None

    def _forget(self) -> None:
        """Drop what is queued (the drain task may still hold the deque)."""
        if type(self.items) is deque:
            self.items.clear()
        self.items = ()

    def stop(self) -> None:
        """Unsubscribe; safe to call more than once."""
        self.channel.detach(self)

    def _fail(self) -> None:
        """The view's hook failed on a message: log it, stop relaying, close this socket with 1011."""
        logger.exception("Unhandled error relaying to %s: closing with 1011", type(self.view).__name__)
        self.failed = True
        self._forget()
        self.stop()
        self.view._spawn(self.ws.close(CloseCode.INTERNAL_ERROR))


def _identity_hook() -> Any:
    from .websocket import WebSocketView

    return WebSocketView.relay_message
