"""python manage.py publish <channel> '<json>': publish one message to the running servers.

Exits with status 1 and says why when no cross-process layer is configured (nothing would reach a
running server) or when Redis is unreachable (the message was published to nobody).
"""

import json

from django.core.management.base import BaseCommand, CommandError

from realtime.pubsub.broker import BrokerUnavailable
from realtime.pubsub.channel import Channel
from realtime.routing import AutoRouter

from ._layer import require_cross_process


class Command(BaseCommand):
    help = "Publish a JSON message to a named Channel in every server process (needs a cross-process layer)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("channel", help="The Channel's name, e.g. ticks")
        parser.add_argument("message", help='The message as JSON, e.g. \'{"symbol": "R_100"}\'')

    def handle(self, channel: str, message: str, **options) -> None:
        try:
            payload = json.loads(message)
        except ValueError as error:
            raise CommandError(f"The message is not valid JSON: {error}") from None
        AutoRouter().autodiscover()  # imports each app's routing.py, where channels are declared
        target = Channel.named(channel)
        require_cross_process(target)
        try:
            target.publish_sync(payload)
        except BrokerUnavailable as error:
            raise CommandError(f"Not published: {error}") from None
        self.stdout.write(f"Published to {channel!r}.")
