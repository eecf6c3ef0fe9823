"""The direct delivery path for WebSockets: a WebSocketView that relays a Channel (``relay = ticks``),
or whose ``stream()`` only forwards one (``realtime.forwarding``).

The general ``stream()`` hook runs user code per socket: every published message wakes one task
per socket (the push task, the generator, the subscription), and goes through the ASGI ``send``.
A relay needs none of that. Its queue is a :class:`~realtime.pubsub.delivery.DeliveryQueue` on the
channel: when a message is published, the queue writes the message's WebSocket frame, built once per
publish, straight to the socket's transport (``realtime.servers`` finds the writer), in the
publisher's own loop turn, with no task woken.

When it cannot (another server, a transport pushing back, a message still queued), :class:`Relay`,
the socket's drain, sends the queue through the ordinary ASGI path in one task, which waits for
the client and applies the slow-consumer policy (``realtime.flow``). Drops are counted and, if the
view's ``relay_gap`` returns a message, signalled to the client before the next message.

A ``relay_message`` or ``relay_gap`` that raises, or returns what JSON cannot encode, ends that
socket as a failing ``stream()`` does: the error is logged and the client gets 1011. The channel's
other subscribers are not touched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from .closecodes import CloseCode
from .connection import WebSocket, WebSocketDisconnect
from .encoding import check_text
from .frames import binary_frame, json_frame, text_frame
from .pubsub.delivery import DeliveryQueue, Writer

logger = logging.getLogger("realtime.relay")


def _text(message: Any, message_id: Any) -> bytes:
    return text_frame(check_text(message))


def _binary(message: Any, message_id: Any) -> bytes:
    return binary_frame(message)


#: The frame encoder of each view encoding.
ENCODERS: dict[str, Callable[[Any, Any], bytes]] = {"json": json_frame, "text": _text, "bytes": _binary}
#: The connection's send of what each encoder frames (the ASGI path, when the direct write cannot).
SENDS: dict[Callable[[Any, Any], bytes], str] = {json_frame: "send_json", _text: "send_text", _binary: "send_bytes"}


class Relay:
    """One socket's relay of its view's channel: the queue on the channel, and its drain."""

    __slots__ = ("_task", "_waiter", "counter", "direct", "gap", "idle", "name", "queue", "spawn", "writer", "ws")

    def __init__(
        self, ws: WebSocket, writer: Writer | None, channel: Any, encoding: str, *,
        transform: Callable[[Any], Any] | None, gap: Callable[[int], Any],
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]], name: str,
    ) -> None:
        self.ws = ws
        self.writer = writer
        self.idle = True
        self.direct = 0
        self.counter = ws
        self.gap = gap
        self.spawn = spawn
        #: The view's name, for the log line of a failing hook.
        self.name = name
        self._task: asyncio.Task[None] | None = None
        #: Where the drain task parks between messages when there is no direct writer (uvicorn h11).
        self._waiter: asyncio.Future[None] | None = None
        self.queue = DeliveryQueue(self, channel.maxlen, ENCODERS[encoding], channel=channel, transform=transform)
        channel.attach(self.queue)

    def wake(self, queue: DeliveryQueue) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        elif self._task is None:
            self.idle = False
            self._task = self.spawn(self._send_queued())

    async def _send_queued(self) -> None:
        ws, queue = self.ws, self.queue
        send = getattr(ws, SENDS[queue.encoder])
        try:
            while True:
                while (entry := queue.take()) is not None:
                    missed = queue.missed()
                    if missed:
                        notice = self.gap(missed)
                        if notice is not None:
                            await send(notice)
                    await send(entry[1])
                if self.writer is not None:
                    queue.clear()  # the direct path takes over again
                    return
                # No direct path on this server: park until the next message rather than end,
                # so a publish costs one wake-up per socket, not a new task.
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
        except WebSocketDisconnect:
            queue.clear()
        except Exception:
            queue.fail()
        finally:
            self._task = None
            self._waiter = None
            self.idle = True

    def failed(self, queue: DeliveryQueue) -> None:
        """The view's hook failed on a message: log it, stop relaying, close this socket with 1011."""
        logger.exception("Unhandled error relaying to %s: closing with 1011", self.name)
        self.spawn(self.ws.close(CloseCode.INTERNAL_ERROR))

    def close(self) -> None:
        """Unsubscribe; safe to call more than once."""
        self.queue.close()
