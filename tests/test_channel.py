"""Channel in one process: the spec's API, slow consumers, gaps, history, and a property test."""

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime import Channel, Gap
from realtime.pubsub import ids
from realtime.pubsub.channel import group_name
from realtime.pubsub.history import MemoryHistory
from tests.history_ids import ids_of, seq

GROUP_NAME_ALPHABET = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


async def test_publish_returns_how_many_local_subscribers_got_it():
    channel = Channel(maxlen=10)
    assert await channel.publish({"x": 0}) == 0
    first, second = await channel.subscribe_queue(), await channel.subscribe_queue()
    assert channel.subscriber_count == 2
    assert await channel.publish({"x": 1}) == 2
    assert await first.get() == {"x": 1} and await second.get() == {"x": 1}
    await channel.unsubscribe_queue(first)
    assert await channel.publish({"x": 2}) == 1
    await channel.unsubscribe_queue(second)
    assert channel.subscriber_count == 0


async def test_subscribe_iterator_cleans_up_after_break():
    channel = Channel()

    async def consume():
        async for message in channel.subscribe():
            if message == "stop":
                break

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    assert channel.subscriber_count == 1
    await channel.publish("go")
    await channel.publish("stop")
    await task
    assert channel.subscriber_count == 0


async def test_subscribe_iterator_cleans_up_when_cancelled():
    channel = Channel()

    async def consume():
        async for _ in channel.subscribe():
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    assert channel.subscriber_count == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert channel.subscriber_count == 0


async def test_full_queue_drops_the_oldest_and_counts_it():
    channel = Channel(maxlen=3)
    queue = await channel.subscribe_queue()
    for i in range(5):
        assert await channel.publish(i) == 1  # never waits for the slow reader
    assert [queue.get_nowait() for _ in range(3)] == [2, 3, 4]
    assert queue.dropped == 2


async def test_gap_marker_tells_a_slow_consumer_what_it_missed():
    channel = Channel(maxlen=2)
    subscription = channel.subscribe(gaps=True)
    async with subscription:
        for i in range(5):
            await channel.publish(i)
        assert [await anext(subscription) for _ in range(3)] == [Gap(3), 3, 4]
        assert subscription.dropped == 3
    assert channel.subscriber_count == 0


async def test_a_subscriber_that_fails_is_removed():
    channel = Channel()

    class Broken:
        def offer(self, message, message_id):
            raise RuntimeError("cannot take it")

    channel.attach(Broken())
    healthy = await channel.subscribe_queue()
    assert await channel.publish("m") == 1
    assert channel.subscriber_count == 1
    assert healthy.get_nowait() == "m"


async def test_published_dict_is_encoded_once_for_all_subscribers():
    from realtime.encoding import dumps

    channel = Channel()
    first, second = await channel.subscribe_queue(), await channel.subscribe_queue()
    await channel.publish({"price": 1.5})
    a, b = first.get_nowait(), second.get_nowait()
    assert a is b and a == {"price": 1.5}
    assert dumps(a) is dumps(b) == '{"price":1.5}'


@pytest.mark.parametrize("name", ["chat:room/42", "ação", "x" * 300, "a b", "", "ticks"])
def test_any_name_maps_to_a_valid_group_name(name):
    group = group_name(name)
    assert set(group) <= GROUP_NAME_ALPHABET
    assert len(group) < 100


def test_distinct_names_map_to_distinct_groups():
    names = ["chat:room/42", "chat_room_42", "chat.room.42", "ação", "acao", "x" * 300, "x" * 301]
    assert len({group_name(n) for n in names}) == len(names)


def test_bad_arguments_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="maxlen"):
        Channel(maxlen=0)
    with pytest.raises(ValueError, match="named Channel"):
        Channel(history=10)
    with pytest.raises(ValueError, match="keeps no history"):
        Channel("plain").subscribe(last_id="1")


async def test_history_replays_after_last_id_then_continues_live():
    channel = Channel("history-unit", history=10)
    for i in range(4):
        await channel.publish({"n": i})
    id_ = await ids_of(channel)
    subscription = channel.subscribe(last_id=id_(2), with_ids=True)
    async with subscription:
        assert await anext(subscription) == (id_(3), {"n": 2})
        await channel.publish({"n": 4})
        assert await anext(subscription) == (id_(4), {"n": 3})
        assert await anext(subscription) == (id_(5), {"n": 4})
        assert subscription.recovered


async def test_history_that_no_longer_reaches_back_is_reported():
    channel = Channel("history-short", history=2)
    for i in range(5):
        await channel.publish(i)
    subscription = channel.subscribe(last_id=(await ids_of(channel))(1), gaps=True)
    async with subscription:
        assert await anext(subscription) == Gap(None)
        assert not subscription.recovered
        assert [await anext(subscription) for _ in range(2)] == [3, 4]


def test_a_resume_from_another_epoch_is_not_recovered_and_replays_everything():
    """A restarted process's history has a new epoch: the old "3" is not its third message."""
    before = MemoryHistory(10)
    old = [before.append({"n": n}) for n in range(1, 4)]
    after = MemoryHistory(10)  # the process restarted
    fresh = [after.append({"n": n}) for n in range(1, 6)]
    assert ids.parse(old[0])[0] != ids.parse(fresh[0])[0]
    replay, recovered = after.after(old[-1])
    assert (replay, recovered) == ([(i, {"n": n}) for n, i in enumerate(fresh, 1)], False)
    assert after.after(fresh[2]) == ([(fresh[3], {"n": 4}), (fresh[4], {"n": 5})], True)


@pytest.mark.parametrize("last_id", ["3", "abc", "", "-1", "1-", "99999999999999999999-1", "0-0-0"])
def test_a_malformed_or_bare_id_is_not_recovered(last_id):
    history = MemoryHistory(10)
    history.append("x")
    assert history.after(last_id) == ([(history.newest_id(), "x")], False)


def test_an_id_from_the_future_is_not_recovered():
    history = MemoryHistory(10)
    first = history.append("x")
    assert history.after(ids.make(ids.parse(first)[0], 2)) == ([(first, "x")], False)


@pytest.mark.parametrize("start", ["0", "0-0"])
def test_the_start_is_everything_recovered_only_while_nothing_was_trimmed(start):
    history = MemoryHistory(3)
    assert history.after(start) == ([], True)
    made = [history.append(n) for n in range(3)]
    assert history.after(start) == (list(zip(made, range(3), strict=True)), True)
    made.append(history.append(3))  # the first one is trimmed away
    assert history.after(start) == (list(zip(made[1:], range(1, 4), strict=True)), False)
    assert history.after(made[0])[1] and not history.after(ids.make(history.epoch, 0))[1]


def test_epochs_only_increase_within_a_process():
    epochs = [ids.new_epoch() for _ in range(100)]
    assert epochs == sorted(set(epochs))


@pytest.mark.parametrize(("value", "parsed"), [
    ("0", (0, 0)), ("0-0", (0, 0)), ("1732550000000-0", (1732550000000, 0)), ("17-3", (17, 3)),
    ("18446744073709551615-1", (18446744073709551615, 1)), ("18446744073709551616-1", None),
    ("3", None), ("1-2-3", None), (" 1-2", None), ("1-2\n", None), ("a-1", None), (3, None), (None, None),
])
def test_one_parser_reads_every_history_id(value, parsed):
    assert ids.parse(value) == parsed


# -- property: interleavings of publish, subscribe, unsubscribe and slow reads ----------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("publish")),
        st.tuples(st.just("subscribe"), st.sampled_from(["queue", "iterator"])),
        st.tuples(st.just("unsubscribe"), st.integers(0, 7)),
        st.tuples(st.just("read"), st.integers(0, 7), st.integers(1, 4)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(operations, st.integers(1, 4))
def test_each_subscriber_gets_what_was_published_after_it_subscribed_minus_counted_drops(ops, maxlen):
    asyncio.run(_run_interleaving(ops, maxlen))


async def _run_interleaving(ops, maxlen):
    channel = Channel(maxlen=maxlen)
    subscribers = []  # dicts: kind, handle, expected, received, active
    counter = 0

    async def read(sub, limit):
        for _ in range(limit):
            if sub["kind"] == "queue":
                if sub["handle"].empty():
                    return
                sub["received"].append(sub["handle"].get_nowait())
            else:
                if sub["handle"].queue.empty():
                    return
                sub["received"].append(await anext(sub["handle"]))

    for op in ops:
        if op[0] == "publish":
            counter += 1
            active = [s for s in subscribers if s["active"]]
            assert await channel.publish(counter) == len(active)
            for sub in active:
                sub["expected"].append(counter)
        elif op[0] == "subscribe":
            if op[1] == "queue":
                handle = await channel.subscribe_queue()
            else:
                handle = channel.subscribe()
                await handle.__aenter__()
            subscribers.append({"kind": op[1], "handle": handle, "expected": [], "received": [], "active": True})
        elif subscribers:
            sub = subscribers[op[1] % len(subscribers)]
            if op[0] == "unsubscribe" and sub["active"]:
                await read(sub, 10**6)  # what was queued before unsubscribing still counts
                if sub["kind"] == "queue":
                    await channel.unsubscribe_queue(sub["handle"])
                else:
                    sub["handle"].close()
                sub["active"] = False
            elif op[0] == "read" and sub["active"]:
                await read(sub, op[2])

    for sub in subscribers:
        if sub["active"]:
            await read(sub, 10**6)
        dropped = sub["handle"].dropped
        received, expected = sub["received"], sub["expected"]
        assert len(received) + dropped == len(expected)
        assert received == sorted(received)  # in order
        assert set(received) <= set(expected)  # nothing invented, nothing duplicated
        assert len(set(received)) == len(received)
        if sub["active"]:
            sub["handle"].close() if sub["kind"] == "iterator" else await channel.unsubscribe_queue(sub["handle"])
    assert channel.subscriber_count == 0


@pytest.mark.parametrize("poison", ["\ud800", float("nan"), float("-inf"), object(), {"k": b"bytes"}])
async def test_a_publish_that_is_not_strict_json_raises_and_reaches_no_one(poison):
    from realtime import UnencodableMessage

    channel = Channel("poison-test", history=10)
    queue = await channel.subscribe_queue()
    try:
        with pytest.raises(UnencodableMessage):
            await channel.publish({"bad": poison})
        assert queue.empty()
        assert await channel.publish({"good": 1}) == 1
        assert queue.get_nowait() == {"good": 1}
        replay, _ = await channel.replay_after("0")
        assert [message for _, message in replay] == [{"good": 1}]
    finally:
        await channel.unsubscribe_queue(queue)


# -- a publish from sync code -------------------------------------------------------------------


def never_awaited(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "realtime.channel" and "never awaited" in r.message]


def test_a_publish_from_sync_code_that_is_never_awaited_logs_an_error_naming_the_line_and_publish_sync(caplog):
    import inspect

    channel = Channel("sync-code")
    line = inspect.currentframe().f_lineno + 1
    channel.publish({"text": "hi"})  # the forgotten await: a coroutine, dropped at once
    channel.publish_with_id("again")
    logged = never_awaited(caplog)
    assert len(logged) == 2 and channel.published == 0
    assert logged[0].startswith(f"Channel('sync-code').publish({{'text': 'hi'}}) at {__file__}:{line} was never "
                                "awaited: nothing was done. In sync code (a Django view, a management command, a "
                                "thread) call channel.publish_sync(message); in async code, await channel.publish")
    assert logged[1].startswith("Channel('sync-code').publish_with_id('again') at ")


async def test_a_sync_django_view_that_forgets_publish_sync_is_logged_and_publish_sync_delivers(caplog):
    from asgiref.sync import sync_to_async
    from django.http import HttpResponse
    from django.test import RequestFactory

    channel = Channel("sync-view")
    queue = await channel.subscribe_queue()

    def forgetful(request):  # a sync view: Django runs it in a worker thread, with no event loop
        channel.publish({"n": 1})
        return HttpResponse("sent")

    def careful(request):
        channel.publish_sync({"n": 2})
        return HttpResponse("sent")

    request = RequestFactory().post("/send")
    await sync_to_async(forgetful)(request)
    assert len(never_awaited(caplog)) == 1 and "Channel('sync-view').publish({'n': 1}) at " in never_awaited(caplog)[0]
    await sync_to_async(careful)(request)
    await asyncio.to_thread(channel.publish_sync, {"n": 3})  # a thread beside the loop the channel is on
    assert [queue.get_nowait() for _ in range(queue.qsize())] == [{"n": 2}, {"n": 3}]
    await channel.unsubscribe_queue(queue)


def test_the_sync_idioms_that_await_later_still_publish_and_log_nothing(caplog):
    import warnings

    from asgiref.sync import async_to_sync

    channel = Channel("awaited-later", history=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # async_to_sync warns about a callable that is not marked async
        assert async_to_sync(channel.publish)("a") == 0  # asgiref makes the coroutine here, awaits it in a loop
        assert asyncio.run(channel.publish("b")) == 0  # made before asyncio.run starts its loop
        delivered, message_id = asyncio.run(channel.publish_with_id("c"))
        assert (delivered, seq(message_id)) == (0, 3)
        assert channel.publish_sync("d") == 0
        channel.publish("closed on purpose").close()
    assert channel.published == 4 and never_awaited(caplog) == []


async def test_publish_is_still_a_coroutine_function_returning_a_plain_coroutine_in_async_code():
    import inspect

    channel = Channel("still-async", history=5)
    assert inspect.iscoroutinefunction(Channel.publish) and inspect.iscoroutinefunction(channel.publish_with_id)
    pending = channel.publish("a")
    assert inspect.iscoroutine(pending)  # no wrapper on the hot path
    assert await pending == 0
    delivered, message_id = await channel.publish_with_id("b")
    assert (delivered, seq(message_id)) == (0, 2)
