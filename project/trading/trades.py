"""Placing a trade: validate, price it at the simulated market, publish it on the trades Channel."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from .channels import trades
from .market import SYMBOLS, current_price

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
    """Validate ``data``, publish the trade (from sync code) and return it."""
    trade = make_trade(user, *validate_order(data))
    trades.publish_sync(trade)
    return trade
