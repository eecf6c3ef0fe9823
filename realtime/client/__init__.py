"""A Python client of protocol v1 (docs/protocol.md), on asyncio and the ``websockets`` library.

Install with the ``client`` extra (``pip install "django-realtime-endpoints[client]"``); it needs no
Django settings. ``Realtime`` is the connection, ``subscribe()`` returns a :class:`Subscription`
to iterate over (``Snapshot``, ``Message``, ``Gap``, ``Join``, ``Leave``); errors are :class:`RealtimeError`.
"""

from .client import PROTOCOL, Realtime, backoff_delay, token_exp
from .events import Event, Gap, Join, Leave, Message, RealtimeError, Snapshot
from .recovery import ChannelState
from .subscription import Subscription

__all__ = [
    "PROTOCOL", "ChannelState", "Event", "Gap", "Join", "Leave", "Message", "Realtime", "RealtimeError",
    "Snapshot", "Subscription", "backoff_delay", "token_exp",
]
