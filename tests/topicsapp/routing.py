"""Endpoints for the topic tests: a TopicSocket with open, owned, presence and failing topics."""

from realtime import HasRole, IsAuthenticated, IsOwner, Refused, Router, Topic, TopicSocket
from realtime.throttling import MessageRateThrottle


class Open(Topic):
    """Anyone; clients may publish as they are."""

    pattern = "open:{name}"
    allow_publish = True
    history = 50


class Owned(Topic):
    """``owned:<pk>``: only the user whose pk is in the name (the pattern's parameter reaches IsOwner)."""

    pattern = "owned:{pk:int}"
    permission_classes = [IsAuthenticated, IsOwner]


class Lobby(Topic):
    """Presence, history, and publishing for logged-in users."""

    pattern = "lobby:{name:slug}"
    presence = True
    history = 20

    def member_info(self, user):
        return {"name": user.get_username()}

    async def on_publish(self, user, data, **params):
        if user is None:
            raise Refused("Log in to talk")
        return {"from": user.get_username(), "said": data}


class Picky(Topic):
    """Refuses every publish but "ok"; raises on "boom"."""

    pattern = "picky"

    async def on_publish(self, user, data, **params):
        if data == "boom":
            raise RuntimeError("boom")
        if data != "ok":
            raise Refused("Only 'ok' is accepted")
        return data


class Personal(Topic):
    """``user:<pk>``: joined by the server for each logged-in user, never asked for."""

    pattern = "user:{pk:int}"
    permission_classes = [IsAuthenticated, IsOwner]


class Editors(Topic):
    """``editors:<name>``: members of the ``editor`` group only (re-checked when the user's groups change)."""

    pattern = "editors:{name:slug}"
    permission_classes = [HasRole("editor")]


class Documents(Topic):
    """``doc:<id>``: the owner of that Document only (IsOwner through ``get_object``)."""

    pattern = "doc:{id:int}"
    permission_classes = [IsAuthenticated, IsOwner]

    async def get_object(self):
        from tests.topicsapp.models import Document

        return await Document.objects.filter(pk=self.params["id"]).afirst()


class Sockets(TopicSocket):
    """No rate limit, so one client may send 10,000 requests."""

    topics = [Open, Owned, Lobby, Picky, Editors, Documents, Personal]
    throttle_classes = []

    def auto_subscribe(self, user):
        return [f"user:{user.pk}"]


class FiveASecond(MessageRateThrottle):
    rate = "5/s"


class Limited(Sockets):
    throttle_classes = [FiveASecond]


router = Router(prefix="/t14")
router.register_topics("/ws", Sockets)
router.register_topics("/limited", Limited)
