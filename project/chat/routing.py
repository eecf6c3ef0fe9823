"""The demo's multi-channel endpoint: ``/api/realtime/ws`` (docs/protocol.md), serving the chat rooms."""

from realtime import Router, TopicSocket

from .topics import Room


class DemoSocket(TopicSocket):
    """One socket for every room a page shows."""

    topics = [Room]


router = Router(prefix="/realtime", tags=["Realtime"])
router.register_topics("/ws", DemoSocket)  # and /ws/fallback: SSE down, POST up
