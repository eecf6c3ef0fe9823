"""python manage.py place_trade alice R_100 buy 10: place a trade from outside the web processes."""

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from project.trading.channels import trades
from project.trading.trades import InvalidOrder, place_trade
from realtime import BrokerUnavailable
from realtime.management.commands._layer import require_cross_process


class Command(BaseCommand):
    help = ("Place a trade for a user; realtime_outbox publishes it to every process and the shared history "
            "(needs REDIS_URL).")

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("symbol")
        parser.add_argument("side", choices=["buy", "sell"])
        parser.add_argument("amount")

    def handle(self, username: str, symbol: str, side: str, amount: str, **options) -> None:
        require_cross_process(trades)  # else the trade would reach no server and no history they share
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user {username!r}") from None
        try:
            trade = place_trade(user, {"symbol": symbol, "side": side, "amount": amount})
        except InvalidOrder as error:
            raise CommandError(json.dumps(error.errors)) from None
        except BrokerUnavailable as error:
            raise CommandError(f"The trade was not placed: {error}") from None
        self.stdout.write(json.dumps(trade))
