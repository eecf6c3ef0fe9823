"""Publish/subscribe: the Channel facade, how messages travel, and what subscribers hold.

- :mod:`~realtime.pubsub.channel`: :class:`Channel`, the facade (publish, subscribe, attach/detach).
- :mod:`~realtime.pubsub.transport`, :mod:`~realtime.pubsub.layer`, :mod:`~realtime.pubsub.streams`:
  this process only, the channel-layer group API, a Redis Stream; one protocol.
- :mod:`~realtime.pubsub.history`: the memory and Redis Stream history stores.
- :mod:`~realtime.pubsub.local_layer`, :mod:`~realtime.pubsub.sharded`, :mod:`~realtime.pubsub.nats`:
  the Redis Cluster and NATS channel layers, on one process-local half.
- :mod:`~realtime.pubsub.delivery`: the one delivery queue every subscriber kind is built on.
- :mod:`~realtime.pubsub.subscription`: ``subscribe()``'s iterator and ``subscribe_queue()``'s queue.
- :mod:`~realtime.pubsub.broker`: whether Redis answers, and the error publishers see when not.
"""

from .broker import BrokerUnavailable
from .channel import PROCESS_ID, Channel, group_name, registry
from .subscription import Gap, SubscriberQueue, Subscription

__all__ = ["PROCESS_ID", "BrokerUnavailable", "Channel", "Gap", "SubscriberQueue", "Subscription", "group_name",
           "registry"]
