"""One channel of a :class:`~realtime.client.Realtime` connection: an async iterator of its events."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from .events import Event, Gap, Join, Leave, RealtimeError
from .recovery import ChannelState

logger = logging.getLogger("realtime.client")


class Connection(Protocol):
    """What a subscription needs of its connection (``realtime.client.Realtime``)."""

    subscriptions: dict[str, Subscription]
    server_channels: list[str]

    @property
    def is_open(self) -> bool: ...

    async def request(self, fields: dict[str, Any], *, on_ok: Callable[[dict[str, Any]], None] | None = None,
                      now: bool = False) -> dict[str, Any]: ...

    async def send_request(self, fields: dict[str, Any],
                           on_ok: Callable[[dict[str, Any]], None] | None = None) -> Awaitable[dict[str, Any]]: ...

    async def presence(self, channel: str) -> list[dict[str, Any]]: ...

    def spawn(self, awaitable: Awaitable[Any]) -> Any: ...


def _member_key(member: dict[str, Any]) -> str:
    return json.dumps(member.get("id"))


class Subscription:
    """Made by ``await rt.subscribe(channel)``; stays joined across reconnections until
    :meth:`unsubscribe`, or until the server ends it (iterating then raises the RealtimeError).

    Events wait in a buffer of ``buffer`` entries; past that the oldest are dropped, counted in
    ``dropped`` and reported as one ``Gap(missed=n)``, so a reader that falls behind never blocks the
    connection (the replies the other channels wait for go on arriving).
    """

    def __init__(self, client: Connection, channel: str, last_id: str | None, presence: bool, buffer: int) -> None:
        self.client = client
        self.channel = channel
        #: "joining", "joined" or "closed".
        self.state = "joining"
        #: The members present, as last known: pk (JSON) → {"id", "info", "connections"}.
        self.members: dict[str, dict[str, Any]] = {}
        #: Events this client dropped because the app read too slowly.
        self.dropped = 0
        self.wants_presence = presence
        self.recovery = ChannelState(channel, last_id)
        self._events: deque[Event] = deque()
        self._buffer = buffer
        self._missed = 0
        self._wakeup = asyncio.Event()
        self._end: BaseException | None = None
        self._first: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    @property
    def last_id(self) -> str | None:
        """The id sent as ``last_id`` when the channel is joined again."""
        return self.recovery.last_id

    @property
    def duplicates(self) -> int:
        """Messages dropped because their id had been delivered already."""
        return self.recovery.duplicates

    async def first_reply(self) -> dict[str, Any]:
        """The first subscribe reply's data (``{"channel", "recovered", "last_id"}``); raises the refusal."""
        return await asyncio.shield(self._first)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._missed:
                missed, self._missed = self._missed, 0
                return Gap(self.channel, missed, True)
            if self._events:
                return self._events.popleft()
            if self._end is not None:
                if isinstance(self._end, StopAsyncIteration):
                    raise StopAsyncIteration
                raise self._end
            self._wakeup.clear()
            await self._wakeup.wait()

    async def unsubscribe(self) -> None:
        """Leave the channel; the iterator ends."""
        if self.state == "closed":
            return
        joined = self.state == "joined"
        self.end(StopAsyncIteration())
        if joined and self.client.is_open:
            try:
                await self.client.request({"op": "unsubscribe", "channel": self.channel})
            except RealtimeError as error:
                if error.code not in ("not_subscribed", "disconnected", "closed"):
                    raise

    # -- what the connection drives --------------------------------------------------------------

    def _push(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Join):
                self.members[_member_key(event.member)] = event.member
            elif isinstance(event, Leave):
                self.members.pop(_member_key(event.member), None)
            if len(self._events) >= self._buffer:
                self._events.popleft()
                self.dropped += 1
                self._missed += 1
            self._events.append(event)
        if events:
            self._wakeup.set()

    def receive(self, frame: dict[str, Any]) -> None:
        """A frame for this channel, in the order the socket delivered it (the connection's reader calls it)."""
        if frame.get("op") == "unsubscribed":
            reason = frame.get("reason") or {}
            self.end(RealtimeError(reason.get("code", "unsubscribed"), reason.get("detail", "")))
            return
        events = self.recovery.receive(frame)
        self._push(events)
        if self.wants_presence and self.state == "joined" and any(
            isinstance(e, Gap) and e.missed is not None for e in events
        ):
            self.client.spawn(self._sync_presence())  # joins and leaves share the dropped queue

    def end(self, reason: BaseException) -> None:
        """Close the subscription; its iterator stops (``StopAsyncIteration``) or raises ``reason``."""
        self.state = "closed"
        self.client.subscriptions.pop(self.channel, None)
        self._end = reason
        self._wakeup.set()
        if not self._first.done():
            if isinstance(reason, RealtimeError):
                self._first.set_exception(reason)
            else:
                self._first.set_result({})

    def _joined(self, data: dict[str, Any], gap_follows: bool) -> bool:
        """Applied as the reply is read, before the frames that follow it (its gap, its replay)."""
        if self.state == "closed":
            return False
        self.state = "joined"
        self._push(self.recovery.joined(data, gap_follows))
        return True

    async def join(self) -> Coroutine[Any, Any, None] | None:
        """Send the subscribe on the connection just opened, with ``last_id`` when there is one.

        Returns once it is sent, with what waits for its reply (the connection runs it as a task, so
        the requests the app made meanwhile go out after every channel's subscribe); None when the
        socket closed first (the channel is joined again after the reconnection)."""
        self.state = "joining"
        frame = self.recovery.subscribe_frame()
        outcome = {"joined": False}

        def on_ok(data: dict[str, Any]) -> None:
            outcome["joined"] = self._joined(data, True)

        try:
            reply = await self.client.send_request(frame, on_ok)
        except RealtimeError:
            return None
        return self._settle(frame, reply, outcome)

    async def _settle(self, frame: dict[str, Any], reply: Awaitable[dict[str, Any]], outcome: dict[str, bool]) -> None:
        try:
            data = await reply
        except RealtimeError as error:
            if self.state == "closed" or error.code in ("disconnected", "closed"):
                return  # joined again after the reconnection
            if error.code == "already_subscribed" and self.channel in self.client.server_channels:
                # The server joined it by itself, without a last_id: what came meanwhile is lost.
                data = {"channel": self.channel, "recovered": "last_id" not in frame, "last_id": None}
                self._joined(data, False)
            else:
                self.end(error)
                return
        else:
            if not outcome["joined"]:  # unsubscribe() came while the subscribe was out: leave now it is joined
                if self.client.is_open:
                    self.client.spawn(self.client.request({"op": "unsubscribe", "channel": self.channel}))
                return
        if not self._first.done():
            self._first.set_result(data)
        if self.wants_presence:
            await self._sync_presence()

    async def _sync_presence(self) -> None:
        """Replace the member list by the server's, with a Join or Leave for each change."""
        try:
            members = await self.client.presence(self.channel)
        except RealtimeError as error:
            if error.code not in ("disconnected", "closed"):
                logger.warning("realtime: presence of %s failed: %s", self.channel, error)
            return
        if self.state == "closed":
            return
        fresh = {_member_key(member): member for member in members}
        events: list[Event] = [Leave(self.channel, m) for key, m in self.members.items() if key not in fresh]
        events += [Join(self.channel, m) for key, m in fresh.items() if key not in self.members]
        self._push(events)
        self.members = fresh
