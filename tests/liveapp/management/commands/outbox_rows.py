"""Print the outbox's rows as JSON (id, channel, processed, message_id, error); ``--clear`` deletes them first."""

import json

from django.core.management.base import BaseCommand

from realtime.models import OutboxMessage


class Command(BaseCommand):
    def add_arguments(self, parser) -> None:
        parser.add_argument("--clear", action="store_true")

    def handle(self, clear, **options) -> None:
        if clear:
            OutboxMessage.objects.all().delete()
        rows = [{"id": r.pk, "channel": r.channel, "processed": r.processed_at is not None,
                 "message_id": r.message_id, "error": r.error} for r in OutboxMessage.objects.order_by("id")]
        self.stdout.write(json.dumps(rows))
