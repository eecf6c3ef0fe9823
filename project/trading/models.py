"""A placed trade, saved before it is published (through the outbox when several processes share Redis)."""

from django.conf import settings
from django.db import models


class Trade(models.Model):
    trade_id = models.CharField(max_length=32, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="trades")
    symbol = models.CharField(max_length=16)
    side = models.CharField(max_length=4)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    price = models.FloatField()
    #: Epoch seconds, as published.
    time = models.FloatField()

    def __str__(self) -> str:
        return f"{self.side} {self.amount} {self.symbol} @ {self.price}"
