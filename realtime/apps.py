from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"
    default_auto_field = "django.db.models.BigAutoField"  # the outbox's ids, whatever the project's default
    verbose_name = "Real-time"

    def ready(self) -> None:
        from . import servers

        servers.install()

        from . import signals
        from .checks import register_checks
        from .pubsub.broker import quiet_channels_redis

        signals.connect()
        from .events.tracker import install as track_lifecycle

        track_lifecycle()
        quiet_channels_redis()
        register_checks()
