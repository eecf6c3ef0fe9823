"""One message waiting to be published: a row written in the transaction that made it true."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class OutboxMessage(models.Model):
    """A publish written as a row, so it commits or rolls back with the data (``realtime.outbox``).

    ``manage.py realtime_outbox`` publishes pending rows of a channel in ``id`` order and sets
    ``processed_at``; ``message_id`` is the history id the message got (empty without history), and
    ``error`` is set when the worker gave up on a row it could never publish (a bug, not an outage).
    """

    channel = models.CharField(max_length=200)
    #: The message as strict JSON text, exactly as the caller gave it (jsonb would reorder its keys).
    payload = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)
    message_id = models.CharField(max_length=64, blank=True, default="")
    error = models.TextField(blank=True, default="")

    class Meta:
        app_label = "realtime"
        verbose_name = "outbox message"
        indexes = [
            # What the worker asks for: the pending rows, per channel, in order.
            models.Index(fields=["channel", "id"], condition=models.Q(processed_at__isnull=True),
                         name="realtime_outbox_pending"),
            models.Index(fields=["processed_at"], name="realtime_outbox_processed"),
        ]

    def __str__(self) -> str:
        state = "pending" if self.processed_at is None else ("failed" if self.error else "published")
        return f"#{self.pk} to {self.channel} ({state})"
