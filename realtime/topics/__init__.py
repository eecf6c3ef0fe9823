"""Many channels over one WebSocket: class-based topics, the protocol, its endpoint, presence."""

from .socket import TopicSocket
from .topic import Refused, Snapshot, Topic

__all__ = ["Refused", "Snapshot", "Topic", "TopicSocket"]
