"""The half of a brokered channel layer that lives in this process: its channels' queues and its groups.

:class:`~realtime.pubsub.sharded.RedisClusterChannelLayer` and
:class:`~realtime.pubsub.nats.NatsChannelLayer` subscribe once per group and process on their broker
and fan each message out here, to the process-local channels (``new_channel``) in the group. What
is the same for both lives in :class:`ProcessLocalLayer`: the queues, the groups, the fan-in of a
broker message, ``send``, ``receive`` and ``group_discard``'s bookkeeping. A subclass brings its
broker: :meth:`~ProcessLocalLayer.connect`, :meth:`~ProcessLocalLayer.publish_payload`, the two
addresses, ``group_add`` and :meth:`~ProcessLocalLayer.left`.

A broker message is msgpack of ``{"g": group, "m": message}`` or ``{"c": channel, "m": message}``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import string
from collections import defaultdict
from typing import Any

import msgpack
from channels.layers import BaseChannelLayer

logger = logging.getLogger("realtime.layer")


class ProcessLocalLayer(BaseChannelLayer):
    """Channels in this process, groups on a broker: one subscription per group per process."""

    extensions = ["groups", "flush"]

    def __init__(self, prefix: str = "asgi", capacity: int = 100, expiry: int = 60,
                 channel_capacity: Any = None) -> None:
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.prefix = prefix
        self.process = "".join(random.choices(string.ascii_letters + string.digits, k=12))
        self.queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.groups: dict[str, set[str]] = defaultdict(set)
        #: Messages this layer could not deliver or publish (reported; never silent).
        self.undelivered = 0

    # -- what a broker brings -----------------------------------------------------------------------

    async def connect(self) -> Any:
        """The broker connection and this process's inbox subscription, for the running loop."""
        raise NotImplementedError

    def group_address(self, group: str) -> str:
        """Where the broker carries ``group``'s messages (a subject, a sharded channel)."""
        raise NotImplementedError

    def process_address(self, process: str) -> str:
        """Where the broker carries messages for one process's channels (its inbox)."""
        raise NotImplementedError

    async def publish_payload(self, address: str, data: bytes) -> None:
        """Publish ``data`` at ``address``; raise if the broker did not take it."""
        raise NotImplementedError

    async def left(self, group: str) -> None:
        """The last local member of ``group`` is gone: drop its subscription."""
        raise NotImplementedError

    # -- the process-local half --------------------------------------------------------------------

    def fan_in(self, data: bytes) -> None:
        """Put one broker message on the queues it names: every local member of a group, or one channel."""
        try:
            payload = msgpack.unpackb(data, raw=False)
            targets = list(self.groups.get(payload["g"], ())) if "g" in payload else [payload["c"]]
            message = payload["m"]
        except Exception:
            self.lost("an unreadable message")
            return
        for name in targets:
            queue = self.queues.get(name)
            if queue is None:
                if "g" not in payload:
                    self.lost(f"a message for {name!r}, which is gone")
                continue
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                self.lost(f"a message for {name!r}, whose queue is full")

    def lost(self, what: str) -> None:
        self.undelivered += 1
        logger.warning("Channel layer could not deliver %s (%d undelivered so far)", what, self.undelivered)

    async def _publish(self, address: str, payload: dict[str, Any]) -> None:
        try:
            await self.publish_payload(address, msgpack.packb(payload, use_bin_type=True))
        except Exception:
            self.lost(f"a publish to {address!r}")
            raise

    # -- the channel layer API ------------------------------------------------------------------------

    async def new_channel(self, prefix: str = "specific") -> str:
        await self.connect()
        name = f"{prefix}.{self.process}!" + "".join(random.choices(string.ascii_letters, k=12))
        self.queues[name] = asyncio.Queue(maxsize=self.get_capacity(name))
        return name

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        self.require_valid_channel_name(channel)
        if "!" not in channel:
            raise NotImplementedError(f"{type(self).__name__} only sends to process-local channels (new_channel)")
        await self.connect()
        process = channel.split("!", 1)[0].rsplit(".", 1)[-1]
        if process == self.process:
            queue = self.queues.get(channel)
            if queue is None:
                return  # a channel that is gone: as channels-redis, the message expires unread
            if queue.full():
                from channels.exceptions import ChannelFull

                raise ChannelFull(channel)
            queue.put_nowait(message)
            return
        await self._publish(self.process_address(process), {"c": channel, "m": message})

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.require_valid_group_name(group)
        await self.connect()
        await self._publish(self.group_address(group), {"g": group, "m": message})

    async def receive(self, channel: str) -> dict[str, Any]:
        self.require_valid_channel_name(channel)
        await self.connect()
        queue = self.queues.get(channel)
        if queue is None:
            queue = self.queues[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        try:
            return await queue.get()
        except asyncio.CancelledError:
            if not any(channel in members for members in self.groups.values()) and queue.empty():
                self.queues.pop(channel, None)  # its consumer is gone: nothing outlives it
            raise

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        members = self.groups.get(group)
        if members is None:
            return
        members.discard(channel)
        if not members:
            del self.groups[group]
            await self.left(group)

    async def flush(self) -> None:
        """Forget every channel and group of this process, and drop its subscriptions."""
        self.queues.clear()
        self.groups.clear()
        await self.close()

    async def close(self) -> None:
        raise NotImplementedError
