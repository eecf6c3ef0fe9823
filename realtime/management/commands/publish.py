"""python manage.py publish <channel> '<json>': publish one message from the command line.

Exits with status 1 and says so on stderr when Redis is unreachable (the message was published to nobody).
"""

import json

from django.core.management.base import BaseCommand, CommandError

from realtime.broker import BrokerUnavailable
from realtime.channel import Channel
from realtime.routing import AutoRouter


class Command(BaseCommand):
    help = "Publish a JSON message to a named Channel, in every process when REDIS_URL is set."

    def add_arguments(self, parser):
        parser.add_argument("channel", help="The Channel's name, e.g. ticks")
        parser.add_argument("message", help='The message as JSON, e.g. \'{"symbol": "R_100"}\'')

    def handle(self, channel: str, message: str, **options):
        try:
            payload = json.loads(message)
        except ValueError as error:
            raise CommandError(f"The message is not valid JSON: {error}") from None
        AutoRouter().autodiscover()  # imports each app's routing.py, where channels are declared
        target = Channel.named(channel)
        if target._layer() is None:
            self.stderr.write(
                "No cross-process channel layer is configured (set REDIS_URL): "
                "the message reaches subscribers of this command's process only."
            )
        try:
            delivered = target.publish_sync(payload)
        except BrokerUnavailable as error:
            raise CommandError(f"Not published: {error}") from None
        self.stdout.write(f"Published to {channel!r} ({delivered} local subscriber(s)).")
