from django.apps import AppConfig


class OpsAppConfig(AppConfig):
    name = "tests.opsapp"
    label = "opsapp"
