from django.apps import AppConfig


class WireAppConfig(AppConfig):
    name = "tests.wireapp"
    label = "wireapp"
