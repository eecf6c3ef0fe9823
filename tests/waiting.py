"""Waiting for conditions, not for time: what the tests wait for before they act or assert.

A test that sleeps "long enough" for a client to subscribe passes on an idle machine and fails on a
loaded one. These helpers poll the condition itself (a subscriber count a live server reports, a
line in its log, a frame on a socket, a process state) with a generous upper bound, and fail naming
what was awaited and what was last seen. Sleeps that stay in the tests are the ones where time
itself is under test (a token's expiry, a heartbeat, "nothing arrives within X"): each says so.

- :func:`wait_until` / :func:`await_until`: poll until true, else fail.
- :func:`settled` / :func:`asettled`: poll until true, else return the last value anyway, for a test
  that asserts on that value itself (the assertion's message stays the test's own).
- Probes of the test apps: :func:`wire_subscribers` (tests/wireapp's /w/report),
  :func:`live_subscribers` and :func:`live_stats` (tests/liveapp), :func:`quiet_wire`,
  :func:`quiet_live` and :func:`quiet_subscribers` (once earlier tests' connections have closed).
- :func:`log_line` / :func:`alog_line`, :func:`redis_subscriptions`, :func:`primed`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import websockets

from tests.wire import report as wire_report

#: Seconds a wait may last before it fails: an upper bound for a loaded machine, not a pace.
TIMEOUT = 20.0
INTERVAL = 0.01


def _describe(predicate: Callable[..., Any], message: str | None) -> str:
    if message:
        return message
    name = getattr(predicate, "__qualname__", repr(predicate))
    return f"{name} to become true" if name != "<lambda>" else "the condition to become true"


def _failure(what: str, timeout: float, last: Any) -> AssertionError:
    return AssertionError(f"Timed out after {timeout:g} s waiting for {what}; last seen: {last!r}")


def wait_until(predicate: Callable[[], Any], timeout: float = TIMEOUT, interval: float = INTERVAL,
               message: str | None = None) -> Any:
    """Call ``predicate()`` until it returns something true, and return that; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _failure(_describe(predicate, message), timeout, value)
        time.sleep(interval)


async def await_until(predicate: Callable[[], Any], timeout: float = TIMEOUT, interval: float = INTERVAL,
                      message: str | None = None) -> Any:
    """:func:`wait_until` for async tests; ``predicate`` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _failure(_describe(predicate, message), timeout, value)
        await asyncio.sleep(interval)


def settled(probe: Callable[[], Any], done: Callable[[Any], bool], timeout: float = TIMEOUT,
            interval: float = INTERVAL) -> Any:
    """``probe()`` once ``done`` holds for it, or its last value at the deadline (the caller asserts)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value) or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


async def asettled(probe: Callable[[], Any], done: Callable[[Any], bool], timeout: float = TIMEOUT,
                   interval: float = INTERVAL) -> Any:
    """:func:`settled` for async tests; ``probe`` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if done(value) or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(interval)


# -- what a live server knows ---------------------------------------------------------------------


async def first_json(url: str) -> dict:
    async with websockets.connect(url) as ws:
        return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def wire_subscribers(server: Any, count: int, timeout: float = TIMEOUT) -> dict:
    """Wait until tests/wireapp's ``wire-fanout`` channel has ``count`` subscribers; the report."""
    report = await asettled(lambda: wire_report(server), lambda now: now["subscribers"] == count, timeout, 0.05)
    if report["subscribers"] != count:
        raise _failure(f"{count} subscribers of wire-fanout in {server.url}", timeout, report)
    return report


async def quiet_wire(server: Any, timeout: float = 30.0) -> dict:
    """The wire report once earlier tests' connections have ended: none open but the probe's own, and
    no subscriber left (a stream counts its connection closed a moment before it unsubscribes).

    Never fails: what stays is for the test's own assertions to notice."""
    return await asettled(lambda: wire_report(server), lambda report: report["open"] <= 1 and not (
        report["subscribers"] or report["topic_subscribers"]), timeout, 0.05)


async def live_stats(server: Any) -> dict:
    """tests/liveapp's /t/stats: tasks, subscribers of its channels, threads, open connections."""
    return await first_json(f"{server.ws_url}/api/t/stats")


async def quiet_live(server: Any, timeout: float = 30.0) -> dict:
    """The live stats once earlier tests' connections and subscriptions have ended; never fails (see quiet_wire)."""
    return await asettled(lambda: live_stats(server), lambda stats: stats["open_connections"] <= 1 and not any(
        stats[key] for key in ("tick_channel", "notifications", "tick_hub", "history")), timeout, 0.05)


async def channel_subscribers(server: Any, name: str) -> int:
    """Subscribers of the Channel ``name`` in that server's process (tests/liveapp's /t/subscribers)."""
    return (await first_json(f"{server.ws_url}/api/t/subscribers/{name}"))["subscribers"]


async def quiet_subscribers(server: Any, name: str, timeout: float = 30.0) -> int:
    """Subscribers of ``name`` in that server once earlier tests' connections and subscriptions have ended."""
    await quiet_live(server, timeout)
    return await asettled(lambda: channel_subscribers(server, name), lambda count: count == 0, timeout, 0.05)


async def live_subscribers(server: Any, name: str, count: int, timeout: float = TIMEOUT) -> int:
    """Wait until the Channel ``name`` has ``count`` subscribers in that server's process."""
    async def reached() -> bool:
        return await channel_subscribers(server, name) == count

    await await_until(reached, timeout, 0.05, f"{count} subscribers of {name!r} in {server.url}")
    return count


def _containing(read: Callable[[], str], needle: str, after: int) -> Callable[[], str]:
    def text() -> str:
        found = read()[after:]
        return found if needle in found else ""

    return text


def log_line(read: Callable[[], str], needle: str, after: int = 0, timeout: float = TIMEOUT) -> str:
    """Wait until ``read()[after:]`` (a log's text past an offset) contains ``needle``; that text."""
    return wait_until(_containing(read, needle, after), timeout, 0.05, f"{needle!r} in the log")


async def alog_line(read: Callable[[], str], needle: str, after: int = 0, timeout: float = TIMEOUT) -> str:
    """:func:`log_line` for async tests."""
    return await await_until(_containing(read, needle, after), timeout, 0.05, f"{needle!r} in the log")


def redis_subscriptions(client: Any, channel: str) -> int:
    """How many connections of a Redis server subscribe to the pub/sub ``channel`` (PUBSUB NUMSUB)."""
    return dict(client.pubsub_numsub(channel)).get(channel.encode(), 0)


def layer_group(group: str, prefix: str = "asgi") -> str:
    """The pub/sub channel channels_redis's RedisPubSubChannelLayer subscribes to for ``group``."""
    return f"{prefix}__group__{group}"


# -- a probe through the whole path ------------------------------------------------------------------


Receiver = Callable[[float], Awaitable[int | None]]


async def primed(send_probe: Callable[[int], Awaitable[Any]], receivers: Sequence[Receiver], every: float = 0.2,
                 timeout: float = TIMEOUT) -> int:
    """Publish probes 1, 2, ... until every receiver has seen one, then until each has seen the last.

    For a path no probe endpoint can vouch for (a subscription in another process, a Redis Stream
    reader): once a probe has arrived, later ones from the same publisher arrive in order, so when
    each receiver has seen the last probe sent, it is subscribed and has no probe left to read.
    ``receiver(wait)`` returns the number of the newest probe it has seen, waiting up to ``wait``
    seconds for one. Returns how many probes were sent.
    """
    deadline = time.monotonic() + timeout
    newest: list[int | None] = [None] * len(receivers)
    sent = 0
    while None in newest:
        if time.monotonic() >= deadline:
            raise _failure("every receiver to see a probe", timeout, newest)
        sent += 1
        await send_probe(sent)
        for i, receiver in enumerate(receivers):
            if newest[i] is None:
                newest[i] = await receiver(every)
    for i, receiver in enumerate(receivers):
        while newest[i] != sent:
            if time.monotonic() >= deadline:
                raise _failure(f"receiver {i} to see probe {sent}", timeout, newest)
            newest[i] = await receiver(1.0)
    return sent


def ws_receiver(ws: Any, probe_of: Callable[[Any], int | None]) -> Receiver:
    """A :func:`primed` receiver reading ``ws``; every frame must be a probe (``probe_of`` its number)."""
    newest: list[int | None] = [None]

    async def receive(wait: float) -> int | None:
        try:
            frame = await asyncio.wait_for(ws.recv(), wait)
        except TimeoutError:
            return newest[0]
        number = probe_of(json.loads(frame))
        if number is None:
            raise AssertionError(f"a frame other than a probe arrived while priming: {frame!r}")
        newest[0] = number
        return number

    return receive


def list_receiver(items: list, probe_of: Callable[[Any], int | None]) -> Receiver:
    """A :func:`primed` receiver over a list a background reader appends to."""
    returned: list[int | None] = [None]

    def newest() -> int | None:
        numbers = [n for n in map(probe_of, list(items)) if n is not None]
        return max(numbers) if numbers else None

    async def receive(wait: float) -> int | None:
        """The newest probe once it is newer than the one returned last time, or at ``wait``."""
        returned[0] = await asettled(newest, lambda n: n is not None and n != returned[0], wait, 0.01)
        return returned[0]

    return receive


async def heard_after_listening(channel: Any, publish: Callable[[], Awaitable[Any]], expected: list,
                                timeout: float = 10.0) -> None:
    """Attach a subscriber to ``channel``, wait for ``channel.listening()``, run ``publish()`` at
    once, and wait until the subscriber was offered exactly ``expected``; detached however it ends."""
    got: list = []

    class Recorder:
        def offer(self, message: Any, message_id: Any) -> None:
            got.append(message)

    recorder = Recorder()
    channel.attach(recorder)
    try:
        await channel.listening()
        await publish()
        await await_until(lambda: got == expected, timeout, message="the publish right after listening()")
    finally:
        channel.detach(recorder)
