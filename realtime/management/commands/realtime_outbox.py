"""python manage.py realtime_outbox: publish the transactional outbox's rows, at least once, in order per channel.

Run one or several (they share the work on PostgreSQL, take turns on SQLite). SIGTERM or Ctrl-C
stops after the current batch. ``--once`` drains what is pending and exits (status 1 if rows are
left, e.g. Redis is unreachable), for cron or tests.
"""

import asyncio
import signal

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from realtime.models import OutboxMessage
from realtime.outbox import OutboxWorker
from realtime.routing import AutoRouter


class Command(BaseCommand):
    help = "Publish the pending rows of realtime's outbox (realtime.outbox.publish) to their channels."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--database", default="default", help="The database alias of the outbox table")
        parser.add_argument("--batch", type=int, default=100,
                            help="Rows of one channel published per transaction (a crash republishes at most these)")
        parser.add_argument("--interval", type=float, default=0.5, help="Seconds between looks when nothing is pending")
        parser.add_argument("--rate", type=float, default=None, help="At most this many messages per second")
        parser.add_argument("--keep", type=float, default=86400.0,
                            help="Seconds processed rows are kept before they are deleted (0: delete at once)")
        parser.add_argument("--once", action="store_true", help="Drain what is pending, then exit")

    def handle(self, database: str, batch: int, interval: float, rate: float | None, keep: float, once: bool,
               **options) -> None:
        if batch < 1 or interval <= 0 or (rate is not None and rate <= 0) or keep < 0:
            raise CommandError("--batch must be >= 1, --interval and --rate > 0, --keep >= 0")
        AutoRouter().autodiscover()  # imports each app's routing.py, where channels (and their history) are declared
        worker = OutboxWorker(using=database, batch=batch, rate=rate)
        try:
            asyncio.run(self.serve(worker, interval, once, keep))
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"Published {worker.published} message(s); gave up on {worker.failed}.")
        if once:
            left = OutboxMessage.objects.using(database).filter(processed_at__isnull=True).count()
            if left:
                raise CommandError(f"{left} outbox row(s) are still pending (is Redis reachable?)")

    async def serve(self, worker: OutboxWorker, interval: float, once: bool, keep: float) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await worker.run(stop, interval=interval, once=once, keep=keep)

