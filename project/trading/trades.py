"""Placing a trade: validate, price it at the simulated market, save it and publish it on the trades Channel.

The trade and its publish commit together. With several processes (REDIS_URL) the publish is an
outbox row that ``manage.py realtime_outbox`` publishes at least once, even if this process dies
right after the commit; a replay carries the same ``trade_id`` (and ``outbox_id``), which the page
shows once. In one process (``make run``) it is a publish held until the commit.
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction

from realtime import outbox

from .channels import trades
from .market import SYMBOLS, current_price
from .models import Trade

SIDES = ("buy", "sell")
MAX_AMOUNT = Decimal("1000000")


class InvalidOrder(ValueError):
    """The order cannot be placed; ``errors`` maps each bad field to a message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(errors)
        self.errors = errors


def validate_order(data: Any) -> tuple[str, str, Decimal]:
    if not isinstance(data, dict):
        raise InvalidOrder({"non_field_errors": "Send a JSON object with symbol, side and amount"})
    errors = {}
    symbol, side = data.get("symbol"), data.get("side")
    if symbol not in SYMBOLS:
        errors["symbol"] = f"One of {', '.join(SYMBOLS)}"
    if side not in SIDES:
        errors["side"] = "buy or sell"
    try:
        amount = Decimal(str(data.get("amount")))
        if not amount.is_finite() or amount <= 0 or amount > MAX_AMOUNT:
            raise InvalidOperation
        amount = amount.quantize(Decimal("0.01"))
        if amount <= 0:
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        errors["amount"] = f"A positive number up to {MAX_AMOUNT}"
        amount = Decimal(0)
    if errors:
        raise InvalidOrder(errors)
    return symbol, side, amount


def make_trade(user: Any, symbol: str, side: str, amount: Decimal) -> dict[str, Any]:
    return {
        "trade_id": uuid.uuid4().hex,
        "user_id": user.pk,
        "username": user.get_username(),
        "symbol": symbol,
        "side": side,
        "amount": str(amount),
        "price": current_price(symbol),
        "time": round(time.time(), 3),
    }


def place_trade(user: Any, data: Any) -> dict[str, Any]:
    """Validate ``data``, save the trade and publish it once the transaction commits; return it."""
    trade = make_trade(user, *validate_order(data))
    with transaction.atomic():
        Trade.objects.create(**{k: v for k, v in trade.items() if k not in ("user_id", "username")}, user=user)
        if trades.reaches_other_processes:
            outbox.publish(trades, trade)  # a worker publishes it, at least once
        else:
            trades.publish_sync(trade)  # this process is the whole deployment: held until the commit
    return trade
