from django.apps import AppConfig


class TopicsAppConfig(AppConfig):
    name = "tests.topicsapp"
    label = "topicsapp"
