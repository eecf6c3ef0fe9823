"""The Channels behind topic names, and when to let go of one.

Topics make a :class:`realtime.Channel` per channel name on demand (``Topic.channel``, presence's
companion channels). Names are unbounded (``room:{name}``), so a channel without history that no
subscriber of this process uses any more is dropped from the registry; the next use makes it again.
"""

from __future__ import annotations

from ..pubsub.channel import Channel, registry


def release_channel(channel: Channel) -> None:
    """Forget a history-less channel nobody in this process subscribes to (channel names are unbounded)."""
    if not channel.history and channel.subscriber_count == 0 and registry.get(channel.name) is channel:
        del registry[channel.name]
