from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "project.chat"
    label = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from . import online

        if online.enabled():  # who is online, from the lifecycle events: receivers in every process
            online.connect()
