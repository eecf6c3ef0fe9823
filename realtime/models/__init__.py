"""The realtime app's tables: the transactional outbox and the HTTP publish API's keys."""

from .apikey import ApiKey
from .outbox import OutboxMessage

__all__ = ["ApiKey", "OutboxMessage"]
