"""Many channels over one WebSocket: class-based topics, the protocol, its endpoint, presence."""

from .socket import TopicSocket
from .topic import Refused, Topic

__all__ = ["Refused", "Topic", "TopicSocket"]
