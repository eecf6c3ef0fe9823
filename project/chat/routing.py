"""The demo's multi-channel endpoint: ``/api/realtime/ws`` (docs/protocol.md), serving the chat rooms."""

from realtime import Router, TopicSocket

from .online import Online
from .topics import Room


class DemoSocket(TopicSocket):
    """One socket for every room a page shows, and the site's online list."""

    topics = [Room, Online]


router = Router(prefix="/realtime", tags=["Realtime"])
router.register_topics("/ws", DemoSocket)  # and /ws/fallback: SSE down, POST up
