"""Publish on commit: a publish made inside ``transaction.atomic()`` waits for the outermost commit.

A view that saves an order and publishes it in one atomic block must not tell every client about an
order that a rollback then erases. So, while ``REALTIME["PUBLISH_ON_COMMIT"]`` is on (the default), a
publish whose caller's database connection is inside an atomic block is handed to Django's
``transaction.on_commit``: it runs after the outermost block commits, and never if it rolls back (a
savepoint that rolls back drops what was held inside it, as Django does for every ``on_commit``).

*Whose* connection: Django's connections belong to a thread. Sync code's is its thread's; async
code's ORM runs in a worker thread (``sync_to_async``), and Django refuses ``atomic()`` on the
event loop's thread, so an ``await channel.publish()`` on the loop is never inside a transaction.
The sync forms that can be are caught where they are called: ``publish_sync`` and
``async_to_sync(channel.publish)`` (asgiref calls ``publish`` in the calling thread to make the
coroutine, see tests/test_publish_on_commit.py) both check the calling thread's connections.

A held publish returns 0 (nothing delivered yet) and ``publish_with_id`` ``(0, None)``: the id does
not exist before the commit. What it delivers after the commit is at most once: if Redis is away
then (``BrokerUnavailable``) or the process dies between the commit and the publish, the message is
lost, logged and counted (``Channel.held_lost``); :mod:`realtime.outbox` is the at-least-once way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("realtime.channel")


def transaction_to_wait_for(on_commit: bool | None) -> str | None:
    """The alias of a database whose connection, in this thread, is in an atomic block; else None.

    ``on_commit`` is the call's choice: False publishes now, True holds even when the setting is off,
    None follows ``REALTIME["PUBLISH_ON_COMMIT"]``. Only connections this thread has opened are looked
    at, so a thread that never touched the database pays one empty loop.
    """
    if on_commit is False:
        return None
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if connection.in_atomic_block:
            if on_commit is None:
                from ..conf import setting

                if not setting("PUBLISH_ON_COMMIT"):
                    return None
            return connection.alias
    return None


def hold(alias: str, channel: Any, message: Any, publish_now: Callable[[Any], Any]) -> None:
    """Run ``publish_now(message)`` after ``alias``'s outermost atomic block commits; nothing on rollback.

    After the commit the data is saved, so a failed publish is not raised into the code that
    committed (it would see an error for a write that succeeded): it is logged and counted.
    """
    from django.db import transaction

    def after_commit() -> None:
        try:
            publish_now(message)
        except Exception as error:
            channel.held_lost += 1
            logger.error(
                "A publish to %r held until commit failed after the commit (%s): nobody received it. "
                "realtime.outbox.publish() delivers at least once.", channel.name, error or type(error).__name__,
            )

    channel.held += 1
    transaction.on_commit(after_commit, using=alias)
