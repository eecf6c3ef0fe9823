"""Publish on commit, in process: the switch, the per-call choice, what a held publish returns, a failure
after the commit, and the asgiref behaviour the async form relies on. tests/test_outbox.py runs the same
holds in processes of their own on SQLite and PostgreSQL, with Redis."""

import logging
import threading
from collections import deque

import pytest
from asgiref.sync import async_to_sync, markcoroutinefunction, sync_to_async
from django.db import transaction

from realtime import BrokerUnavailable, Channel
from realtime.testing import capture
from tests.servers import free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]


def test_asgiref_calls_the_async_function_in_the_calling_thread():
    """``async_to_sync(channel.publish)`` is held only because asgiref calls ``publish`` in the caller's
    thread (to make the coroutine), where the transaction's connection is: if that changes, this fails."""
    seen = []

    @markcoroutinefunction
    def probe():
        seen.append(threading.current_thread())

        async def done():
            return None

        return done()

    async_to_sync(probe)()
    assert seen == [threading.current_thread()]


def test_publish_sync_inside_atomic_is_held_until_commit_and_returns_zero():
    channel = Channel()
    with capture(channel) as published:
        with transaction.atomic():
            assert channel.publish_sync({"n": 1}) == 0
            with transaction.atomic():  # a savepoint that commits: still held by the outer block
                channel.publish_sync({"n": 2})
            assert published.messages == []
        assert published.messages == [{"n": 1}, {"n": 2}]
    assert channel.held == 2 and channel.held_lost == 0


def test_a_held_async_publish_returns_zero_and_no_id_and_may_be_dropped_in_silence(caplog):
    channel = Channel("commit-ids", history=10)
    with caplog.at_level(logging.ERROR, "realtime.channel"):
        with transaction.atomic():
            assert async_to_sync(channel.publish_with_id)({"n": 1}) == (0, None)
            channel.publish({"n": 2})  # no await: still published at the commit, and nothing is logged as lost
            assert async_to_sync(channel.newest_id)() is None
        newest = async_to_sync(channel.newest_id)()
    replay, _ = async_to_sync(channel.replay_after)(newest)
    assert newest is not None and replay == deque()
    assert channel.held == 2 and channel.published == 2  # both went out at the commit
    assert "never awaited" not in caplog.text


def test_outside_a_transaction_a_publish_goes_at_once():
    channel = Channel()
    with capture(channel) as published:
        channel.publish_sync("now")
        assert published.messages == ["now"]
    assert channel.held == 0


def test_on_commit_false_publishes_inside_atomic_at_once_and_rollback_does_not_take_it_back():
    channel = Channel()
    with capture(channel) as published:
        with pytest.raises(ZeroDivisionError), transaction.atomic():
            channel.publish_sync("typing…", on_commit=False)
            1 / 0  # noqa: B018
        assert published.messages == ["typing…"]


def test_the_switch_off_publishes_at_once_and_on_commit_true_still_holds(settings):
    settings.REALTIME = {**settings.REALTIME, "PUBLISH_ON_COMMIT": False}
    channel = Channel()
    with capture(channel) as published:
        with transaction.atomic():
            channel.publish_sync("at once")
            channel.publish_sync("after", on_commit=True)
            assert published.messages == ["at once"]
        assert published.messages == ["at once", "after"]


def test_a_publish_that_fails_after_the_commit_is_logged_and_counted_not_raised_into_the_committer(settings, caplog):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    channel = Channel("commit-lost", history=10)
    with caplog.at_level(logging.ERROR, "realtime.channel"):
        with transaction.atomic():
            channel.publish_sync({"n": 1})
        # the block committed without an exception
    assert channel.held_lost == 1
    assert "held until commit failed after the commit" in caplog.text
    with pytest.raises(BrokerUnavailable):  # outside a transaction it raises, as before
        channel.publish_sync({"n": 2})


async def test_a_transaction_run_from_async_code_holds_its_publishes_until_it_commits():
    channel = Channel()
    queue = await channel.subscribe_queue()

    def place_order() -> int:
        with transaction.atomic():
            channel.publish_sync({"order": 1})
            return queue.qsize()

    assert await sync_to_async(place_order)() == 0  # nothing while the transaction was open
    assert await queue.get() == {"order": 1}
    await channel.unsubscribe_queue(queue)
