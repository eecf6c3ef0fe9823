"""Lifecycle events: ``user_online``, ``user_offline``, ``channel_occupied``, ``channel_vacated``.

Django signals, sent once per change across all processes (a Redis Stream with a consumer group
with ``REDIS_URL``; in this process without), debounced by ``REALTIME["LIFECYCLE_GRACE"]``::

    from realtime.events import user_offline

    @receiver(user_offline)
    async def went_away(sender, user_id, event_id, at, **kwargs):
        ...

See docs/reference/lifecycle-events.md for what the delivery promises.
"""

from .signals import channel_occupied, channel_vacated, user_offline, user_online

__all__ = ["channel_occupied", "channel_vacated", "user_offline", "user_online"]
