from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Real-time"

    def ready(self) -> None:
        from . import servers

        servers.install()

        from . import signals
        from .checks import register_checks
        from .pubsub.broker import quiet_channels_redis

        signals.connect()
        quiet_channels_redis()
        register_checks()
