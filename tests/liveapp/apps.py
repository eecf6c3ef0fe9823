from django.apps import AppConfig


class LiveAppConfig(AppConfig):
    name = "tests.liveapp"
    label = "liveapp"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model

        # The specification's IsSubscriber reads user.is_subscriber; test users opt in by first name.
        get_user_model().is_subscriber = property(lambda user: user.first_name == "subscriber")
