"""Create an API key of the HTTP publish API and print it (the admin does the same for people)."""

from django.core.management.base import BaseCommand

from realtime.models import ApiKey


class Command(BaseCommand):
    def add_arguments(self, parser) -> None:
        parser.add_argument("name")
        parser.add_argument("patterns", nargs="+")
        parser.add_argument("--inactive", action="store_true")

    def handle(self, name, patterns, inactive, **options) -> None:
        key = ApiKey(name=name, channels="\n".join(patterns), is_active=not inactive)
        secret = key.set_new_key()
        key.full_clean()
        key.save()
        self.stdout.write(f"{key.pk} {secret}")
