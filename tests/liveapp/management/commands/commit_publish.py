"""Publish inside transaction.atomic() from a process of its own, the way a view would; print what Redis held.

``--via sync`` (publish_sync), ``async`` (async_to_sync(channel.publish)), ``outbox``
(realtime.outbox.publish); ``--rollback`` ends the block with an exception; ``--savepoint-rollback``
publishes the second half inside a nested block that rolls back. Prints one JSON line: the Redis
Stream lengths of the channels before the commit and after it, and the outbox row ids written.
"""

import json

import redis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from realtime import outbox
from realtime.pubsub.history import key as history_key
from realtime.routing import AutoRouter


class Rollback(Exception):
    pass


class Command(BaseCommand):
    def add_arguments(self, parser) -> None:
        parser.add_argument("--via", choices=["sync", "async", "outbox"], default="sync")
        parser.add_argument("--count", type=int, default=1)
        parser.add_argument("--channels", type=int, default=1, help="Spread over live-commit-0 .. -(N-1)")
        parser.add_argument("--rollback", action="store_true")
        parser.add_argument("--savepoint-rollback", action="store_true")

    def handle(self, via, count, channels, rollback, savepoint_rollback, **options) -> None:
        AutoRouter().autodiscover()
        from tests.liveapp.routing import commit_channels

        targets = commit_channels[:channels]
        client = redis.Redis.from_url(settings.REDIS_URL)
        lengths = lambda: sum(client.xlen(history_key(c.name)) for c in targets)  # noqa: E731
        rows: list[int] = []

        def send(n: int) -> None:
            channel, message = targets[n % len(targets)], {"n": n}
            if via == "sync":
                channel.publish_sync(message)
            elif via == "async":
                async_to_sync(channel.publish)(message)
            else:
                rows.append(outbox.publish(channel, message).pk)

        before = None
        try:
            with transaction.atomic():
                half = count // 2 if savepoint_rollback else count
                for n in range(half):
                    send(n)
                if savepoint_rollback:
                    try:
                        with transaction.atomic():
                            for n in range(half, count):
                                send(n)
                            raise Rollback
                    except Rollback:
                        pass
                before = lengths()
                if rollback:
                    raise Rollback
        except Rollback:
            pass
        self.stdout.write(json.dumps({"before_commit": before, "after_commit": lengths(), "rows": rows}))
