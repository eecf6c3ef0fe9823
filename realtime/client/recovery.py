"""The recovery rules of one subscription, sans-IO: what to send as ``last_id`` and what each frame means.

The same rules as ``realtime.js``, tested from the same table (tests/clients/recovery.json):

- the subscribe carries the last id received (or the first reply's ``last_id`` when no message
  came), whatever it is: ``"0"`` ("from the start") is sent as it is;
- a message whose id was delivered already is dropped and counted in ``duplicates``; ids are opaque
  strings compared by equality only;
- a failed recovery (a reply with ``recovered: false``) is one :class:`Gap`: the ``gap`` frame the
  server sends right after such a reply is the same gap, not a second one;
- after ``recovered: false`` the ids delivered before are forgotten: a restarted in-memory history
  hands out the same ones again, and the new messages must not be dropped as duplicates;
- a reply with a ``snapshot`` is a :class:`Snapshot` event (after that reply's gap, if any), before
  the messages that follow it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .events import Event, Gap, Join, Leave, Message, Snapshot

#: How many recent ids a subscription remembers to drop a repeated one.
SEEN_IDS = 1000


class ChannelState:
    """One channel's resume point, the ids it has delivered, and whether a gap was just reported."""

    def __init__(self, channel: str, last_id: str | None = None, remember: int = SEEN_IDS) -> None:
        self.channel = channel
        #: Sent as ``last_id`` on the next subscribe.
        self.last_id = last_id
        #: Messages dropped because their id had been delivered already (the server should send none).
        self.duplicates = 0
        self._remember = remember
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._resuming = False
        self._recovery_reported = False

    def subscribe_frame(self) -> dict[str, Any]:
        """The ``subscribe`` request (without its ref) for the next join."""
        self._resuming = self.last_id is not None
        self._recovery_reported = False
        frame: dict[str, Any] = {"op": "subscribe", "channel": self.channel}
        if self._resuming:
            frame["last_id"] = str(self.last_id)
        return frame

    def joined(self, data: dict[str, Any], gap_follows: bool = True) -> list[Event]:
        """The subscribe succeeded with reply ``data``; ``gap_follows``: the server sends its gap frame next."""
        if not self._resuming and self.last_id is None and data.get("last_id") is not None:
            self.last_id = str(data["last_id"])  # resume from here if the connection drops before any message
        events: list[Event] = []
        if self._resuming and data.get("recovered") is False:
            self._seen.clear()
            self._recovery_reported = gap_follows
            events.append(Gap(self.channel, None, False))
        snapshot = data.get("snapshot")
        if isinstance(snapshot, dict):  # the topic's state: the messages after the reply are those after its id
            if data.get("last_id") is not None:
                self.last_id = str(data["last_id"])
            events.append(Snapshot(self.channel, snapshot.get("data"), snapshot.get("last_id")))
        return events

    def receive(self, frame: dict[str, Any]) -> list[Event]:
        """What a server frame for this channel means to the app (nothing for a duplicate)."""
        op = frame.get("op")
        if op == "message":
            self._recovery_reported = False  # a failed recovery's gap frame comes before its replay, or never
            message_id = frame.get("id")
            if message_id is not None:
                if message_id in self._seen:
                    self.duplicates += 1
                    return []
                self._seen[message_id] = None
                if len(self._seen) > self._remember:
                    self._seen.popitem(last=False)
                self.last_id = message_id
            return [Message(self.channel, message_id, frame.get("data"))]
        if op == "gap":
            recovered = frame.get("recovered", True) is not False
            if not recovered:
                self._seen.clear()
                if self._recovery_reported:
                    self._recovery_reported = False  # the reply reported this gap already
                    return []
            return [Gap(self.channel, frame.get("missed"), recovered)]
        if op == "join":
            return [Join(self.channel, frame["member"])]
        if op == "leave":
            return [Leave(self.channel, frame["member"])]
        return []
