"""Across processes through the channel-layer group API: one group per Channel, one member per process.

A publish is sent to the group **before** the local fan-out, so a message is delivered everywhere
or nowhere: when the broker is unreachable the publish raises ``BrokerUnavailable`` and no local
subscriber got it either (local subscribers get it one broker round trip later). channels-redis's
pool comes from the project's CHANNEL_LAYERS, where redis-py's ``Retry`` is rarely configured: the
one reconnect a stale connection needs is done here.

Each process receives through :meth:`LayerTransport.listen`, its single layer subscription for the
channel, and skips what it published itself (already delivered). History, when kept, is this
process's memory (the Redis Stream transport is used instead when ``REDIS_URL`` is set).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from ..encoding import SharedMessage
from .broker import BrokerUnavailable, broker_state, reach
from .history import MemoryHistory
from .transport import Fanout, LocalTransport

#: Identifies this process, so the bridge skips what this process published (already delivered).
PROCESS_ID = uuid.uuid4().hex
MESSAGE_TYPE = "realtime.publish"


class LayerTransport(LocalTransport):
    """A Channel on a channel layer (channels-redis): the group's members are the processes."""

    def __init__(self, channel: Fanout, history: MemoryHistory | None, layer: Any) -> None:
        super().__init__(channel, history)
        self.layer = layer
        #: Set once this process is in the channel's group: another process's publish reaches it.
        self.positioned: asyncio.Future[None] | None = None

    async def publish(self, message: Any) -> tuple[int, str | None]:
        channel, history = self.channel, self.history
        message_id = history.append(message) if history is not None else None
        event = {"type": MESSAGE_TYPE, "m": message, "i": message_id, "o": PROCESS_ID}
        try:
            await reach("publish", channel.name, lambda: self.layer.group_send(channel.group, event), retry=True,
                        broker=getattr(self.layer, "broker_name", "Redis"))
        except BrokerUnavailable:
            channel.broker_errors += 1
            if message_id is not None:
                history.discard(message_id)
            raise
        return channel.deliver(message, message_id), message_id

    def listen(self) -> Any:
        """The subscription's coroutine; whoever asks ``listening()`` from now on waits for its group_add."""
        self.positioned = asyncio.get_running_loop().create_future()
        return self._listen(self.positioned)

    async def _listen(self, positioned: asyncio.Future[None]) -> None:
        """This process's single layer subscription for the channel."""
        layer, channel = self.layer, self.channel
        delay = 0.1
        try:
            while True:
                try:
                    channel_name = await layer.new_channel(prefix="realtime.")
                    await layer.group_add(channel.group, channel_name)
                    break
                except Exception as error:  # broker unreachable at start-up: keep trying
                    broker_state.failed("subscribe", error)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            if not positioned.done():
                positioned.set_result(None)
        broker_state.recovered()
        try:
            while True:
                event = await layer.receive(channel_name)
                if not broker_state.up:
                    broker_state.recovered()
                if event.get("o") == PROCESS_ID:
                    continue
                if event.get("type") != MESSAGE_TYPE:
                    channel.rejected += 1
                    continue
                message, message_id = event.get("m"), event.get("i")
                if type(message) is dict:
                    message = SharedMessage(message)
                channel.deliver(message, message_id)
        finally:
            try:
                await asyncio.shield(layer.group_discard(channel.group, channel_name))
            except Exception:  # noqa: S110 - the layer may be gone at shutdown; membership expires
                pass


def cross_process_layer(alias: str) -> Any:
    """The channel layer ``alias`` when it reaches other processes, else None (none, or in-memory)."""
    from channels.layers import InMemoryChannelLayer, get_channel_layer

    layer = get_channel_layer(alias)
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return None
    return layer
