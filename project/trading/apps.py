from django.apps import AppConfig


class TradingConfig(AppConfig):
    name = "project.trading"
    label = "trading"
    verbose_name = "Trading demo"
