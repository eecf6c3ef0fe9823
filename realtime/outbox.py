"""The transactional outbox: a publish that commits with the data and is delivered at least once.

``realtime.outbox.publish(channel, message)`` writes the message as a row (:class:`OutboxMessage`)
on the caller's database connection, so it commits or rolls back with the rest of the transaction.
``manage.py realtime_outbox`` (:class:`OutboxWorker`) publishes the pending rows and marks them:

- **In order per channel**: one worker at a time holds a channel (the lock on its oldest pending
  row), and publishes its rows in ``id`` order. Rows of two transactions that commit out of ``id``
  order go out in the order the worker sees them committed.
- **Several workers**: on PostgreSQL a worker locks the oldest pending row of a
  channel ``FOR UPDATE SKIP LOCKED``, so workers share channels without waiting for each other. On
  SQLite, which has one writer, a worker's transaction takes the write lock first: workers take
  turns.
- **At least once**: rows are marked in the transaction that locked them, after they were
  published. A worker that dies in between (SIGKILL, a lost database) leaves them pending, and
  they are published again. So every message carries its row id as ``outbox_id``: a consumer that
  remembers the ids it has handled (per channel, the last few thousand) drops a replay.
- While Redis or the database is unreachable nothing is marked that was not published; the worker
  waits (backing off up to 30 s) and tries again. A row that can never be published (a bug, not an
  outage) is marked with its ``error`` and logged, so it does not block its channel for good.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django.core.exceptions import ImproperlyConfigured
from django.db import InterfaceError, OperationalError, close_old_connections, connections, router, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from .encoding import dumps
from .models import OutboxMessage
from .pubsub.broker import BrokerUnavailable
from .pubsub.channel import Channel

logger = logging.getLogger("realtime.outbox")

#: The key the worker adds to every message: the row's id, which a consumer dedupes by.
OUTBOX_ID = "outbox_id"

__all__ = ["OUTBOX_ID", "OutboxWorker", "publish"]


def publish(channel: Channel | str, message: dict[str, Any], *, using: str | None = None) -> OutboxMessage:
    """Write ``message`` for ``channel`` to the outbox, in the caller's transaction; returns the row.

    ``message`` is a JSON object (it is delivered with ``"outbox_id": row.id`` added); anything
    that is not strict JSON raises here, not in the worker. ``using`` is the database alias (by
    default the router's choice for writes), which must be the one the caller's transaction is on.
    """
    name = channel.name if isinstance(channel, Channel) else channel
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ValueError(f"The outbox needs a named channel (a str of 1-200 characters), not {channel!r}")
    if type(message) is not dict:
        raise TypeError(f"An outbox message is a JSON object (a dict), not {type(message).__name__}")
    if OUTBOX_ID in message:
        raise ValueError(f"{OUTBOX_ID!r} is set by the outbox worker; leave it out of the message")
    using = using or router.db_for_write(OutboxMessage)
    return OutboxMessage.objects.using(using).create(channel=name, payload=dumps(message))


def pending(using: str) -> Any:
    return OutboxMessage.objects.using(using).filter(processed_at__isnull=True)


class OutboxWorker:
    """Publishes pending outbox rows; :meth:`drain_batch` is one transaction, :meth:`run` the loop."""

    def __init__(self, using: str = "default", batch: int = 100, rate: float | None = None) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch!r}")
        self.using = using
        self.batch = batch
        self.pause = 1.0 / rate if rate else 0.0
        self.published = self.failed = 0

    def drain_batch(self) -> int:
        """Publish up to ``batch`` pending rows of one channel and mark them; returns how many. Sync."""
        close_old_connections()  # a worker runs for days: a dropped connection is replaced here
        connection = connections[self.using]
        with transaction.atomic(using=self.using):
            if connection.vendor == "sqlite":
                # SQLite's transactions start deferred: without a write first, two workers could read the
                # same row. A write that changes nothing takes the one write lock (others wait for it).
                with connection.cursor() as cursor:
                    cursor.execute(f"UPDATE {OutboxMessage._meta.db_table} SET error = error WHERE 1 = 0")  # noqa: S608
            earlier = pending(self.using).filter(channel=OuterRef("channel"), id__lt=OuterRef("id"))
            head = (pending(self.using).filter(~Exists(earlier)).order_by("id")
                    .select_for_update(skip_locked=True).first())
            if head is None:
                return 0
            rows = list(pending(self.using).filter(channel=head.channel, id__gte=head.id).order_by("id")
                        .select_for_update(skip_locked=True)[: self.batch])
            channel = Channel.named(head.channel)
            if not channel.reaches_other_processes:
                raise ImproperlyConfigured(
                    f"Channel {channel.name!r} reaches no other process (no cross-process channel layer: set "
                    "REDIS_URL / CHANNEL_LAYERS as the servers do): the outbox would mark rows nobody received"
                )
            done = self.publish_rows(channel, rows)
            OutboxMessage.objects.using(self.using).bulk_update(done, ["processed_at", "message_id", "error"])
        return len(done)

    def publish_rows(self, channel: Channel, rows: list[OutboxMessage]) -> list[OutboxMessage]:
        """Publish ``rows`` in order; returns those to mark. Stops at the first BrokerUnavailable.

        One hop to the event loop for the whole batch (from the transaction's thread), not one per row.
        """
        return async_to_sync(self.apublish_rows)(channel, rows)

    async def apublish_rows(self, channel: Channel, rows: list[OutboxMessage]) -> list[OutboxMessage]:
        done: list[OutboxMessage] = []
        for row in rows:
            message = json.loads(row.payload)
            message[OUTBOX_ID] = row.pk
            try:
                _, message_id = await channel.publish_with_id(message, on_commit=False)
            except BrokerUnavailable:
                if not done:
                    raise
                break  # mark what went out; the rest waits for Redis
            except Exception as error:
                row.error = f"{type(error).__name__}: {error}"[:1000]
                self.failed += 1
                logger.error("Outbox row %s to %r cannot be published, giving up on it: %s", row.pk,
                             channel.name, row.error)
            else:
                row.message_id = message_id or ""
                self.published += 1
            row.processed_at = timezone.now()
            done.append(row)
            if self.pause:
                await asyncio.sleep(self.pause)
        return done

    def prune(self, older_than: float) -> int:
        """Delete rows processed more than ``older_than`` seconds ago; returns how many."""
        cutoff = timezone.now() - timedelta(seconds=older_than)
        deleted, _ = OutboxMessage.objects.using(self.using).filter(processed_at__lt=cutoff).delete()
        return deleted

    async def run(self, stop: asyncio.Event, interval: float = 0.5, once: bool = False,
                  keep: float | None = 86400.0) -> None:
        """Drain until ``stop`` is set (or, with ``once``, until nothing is pending).

        The batches run in Django's sync thread; their publishes come back to this loop, so the
        Channels' Redis clients are made once, not per message.
        """
        from asgiref.sync import sync_to_async

        drain = sync_to_async(self.drain_batch, thread_sensitive=True)
        logger.info("Outbox worker started (database %r, batch %d)", self.using, self.batch)
        pruned_at = 0.0
        backoff = interval
        while not stop.is_set():
            try:
                count = await drain()
            except BrokerUnavailable as error:
                logger.warning("Redis unreachable, outbox rows stay pending (retrying in %.1f s): %s", backoff, error)
                count, backoff = 0, min(backoff * 2, 30.0)
            except (OperationalError, InterfaceError) as error:  # the database went away, or SQLite stayed locked
                logger.warning("Database error, outbox rows stay pending (retrying in %.1f s): %s", backoff, error)
                count, backoff = 0, min(backoff * 2, 30.0)
            else:
                backoff = interval
            if keep is not None and time.monotonic() - pruned_at > 60:
                pruned_at = time.monotonic()
                await sync_to_async(self.prune, thread_sensitive=True)(keep)
            if count:
                continue
            if once:
                return
            try:
                await asyncio.wait_for(stop.wait(), backoff)
            except TimeoutError:
                pass
