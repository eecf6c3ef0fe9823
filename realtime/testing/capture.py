"""What a test publishes into a Channel, and what the code under test published.

``capture(channel)`` records every ``publish`` on that channel (or on every channel) made while it is
open, in this process, with what each publish delivered, in the spirit of Action Cable's
``assert_broadcasts`` and Phoenix's ``assert_broadcast``. While any capture is open it is one of
``realtime.pubsub.channel.publish_observers``, told of every publish that went out, whichever way it
was made: ``publish``, ``publish_with_id``, ``publish_sync``, ``Topic.publish``, a ``TopicSocket``
client's publish (and a topic's presence frames, on its companion channel). It wraps nothing, so a
publish that is never awaited is still reported as such (:mod:`realtime.unawaited`).

``publish(channel, message)`` feeds a view under test: it first waits until the view has subscribed,
because a view subscribes in its own task after the connection opens, and a message published before
that reaches nobody.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

_ANY: Any = object()
_active: list[Capture] = []


@dataclass(frozen=True)
class Published:
    """One publish: the channel, the message, and how many local subscribers got it."""

    channel: Any
    message: Any
    delivered: int


class Capture:
    """The publishes seen on a channel while the capture is open; use it as a context manager."""

    def __init__(self, channel: Any = None) -> None:
        from realtime.pubsub.channel import Channel

        if channel is not None and not isinstance(channel, (str, Channel)):
            raise TypeError(f"capture() takes a Channel, a channel name, or nothing (every channel), not {channel!r}")
        self.channel = channel
        self.records: list[Published] = []
        self._changed = asyncio.Event()

    @property
    def messages(self) -> list[Any]:
        """The published messages, in order."""
        return [record.message for record in self.records]

    @property
    def count(self) -> int:
        """How many publishes were seen."""
        return len(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def matches(self, channel: Any) -> bool:
        """Whether a publish on ``channel`` belongs to this capture."""
        if self.channel is None:
            return True
        if isinstance(self.channel, str):
            return channel.name == self.channel
        return channel is self.channel

    # -- assertions ---------------------------------------------------------------------------

    def assert_published(self, message: Any = _ANY, *, count: int | None = None) -> list[Any]:
        """Check that ``message`` was published (``count`` times, if given); returns the matches.

        Without ``message``, ``count`` is the total number of publishes.
        """
        matched = self.messages if message is _ANY else [m for m in self.messages if m == message]
        if count is None and not matched:
            what = "anything" if message is _ANY else repr(message)
            raise AssertionError(f"Expected {what} to be published on {self._name()}; published: {self.messages!r}")
        if count is not None and len(matched) != count:
            what = "publishes" if message is _ANY else f"publishes of {message!r}"
            raise AssertionError(
                f"Expected {count} {what} on {self._name()}, got {len(matched)}; published: {self.messages!r}"
            )
        return matched

    def assert_nothing_published(self) -> None:
        """Check that nothing was published."""
        if self.records:
            raise AssertionError(f"Expected nothing published on {self._name()}; published: {self.messages!r}")

    async def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[Any]:
        """Wait until at least ``count`` publishes were seen; returns the messages."""
        deadline = time.monotonic() + timeout
        while len(self.records) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"Expected {count} publishes on {self._name()} within {timeout} s, got {self.messages!r}"
                )
            self._changed.clear()
            try:
                async with asyncio.timeout(left):
                    await self._changed.wait()
            except TimeoutError:
                continue
        return self.messages

    # -- context manager ----------------------------------------------------------------------

    def __enter__(self) -> Capture:
        _install()
        _active.append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _active.remove(self)
        if not _active:
            _uninstall()

    def _record(self, channel: Any, message: Any, delivered: int) -> None:
        self.records.append(Published(channel, message, delivered))
        self._changed.set()

    def _name(self) -> str:
        if self.channel is None:
            return "any channel"
        return repr(self.channel if isinstance(self.channel, str) else self.channel.name or self.channel)


def capture(channel: Any = None) -> Capture:
    """Record what is published on ``channel`` (a Channel or its name; None: every channel)."""
    return Capture(channel)


def _observe(channel: Any, message: Any, delivered: int, message_id: str | None) -> None:
    for recorder in list(_active):
        if recorder.matches(channel):
            recorder._record(channel, message, delivered)


def _install() -> None:
    from realtime.pubsub.channel import publish_observers

    if _observe not in publish_observers:
        publish_observers.append(_observe)


def _uninstall() -> None:
    from realtime.pubsub.channel import publish_observers

    if _observe in publish_observers:
        publish_observers.remove(_observe)


async def wait_for_subscribers(channel: Any, count: int = 1, timeout: float = 5.0) -> None:
    """Wait until ``channel`` has at least ``count`` subscribers in this process."""
    channel = _channel(channel)
    deadline = time.monotonic() + timeout
    while channel.subscriber_count < count:
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"Expected {count} subscribers on {channel!r} within {timeout} s, got {channel.subscriber_count}: "
                "did the view subscribe (is it connected, and does its stream iterate the channel)?"
            )
        await asyncio.sleep(0.005)


async def publish(channel: Any, message: Any, *, subscribers: int = 1, timeout: float = 5.0) -> int:
    """Publish ``message`` once ``subscribers`` subscribers are listening; returns how many got it."""
    channel = _channel(channel)
    await wait_for_subscribers(channel, subscribers, timeout)
    return await channel.publish(message)


def _channel(channel: Any) -> Any:
    from realtime.pubsub.channel import Channel

    if isinstance(channel, str):
        return Channel.named(channel)
    if not isinstance(channel, Channel):
        raise TypeError(f"Expected a Channel or a channel name, not {channel!r}")
    return channel
