"""Endpoints for the topic tests: a TopicSocket with open, owned, presence and failing topics."""

import asyncio

from realtime import (
    HasRole,
    IsAuthenticated,
    IsOwner,
    Refused,
    Router,
    SessionAuthenticator,
    Snapshot,
    Topic,
    TopicSocket,
    WebSocketView,
)
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


#: Each tally's state, as a store would keep it: the values so far and the id of the last one applied.
TALLIES: dict[str, dict] = {}


class Tally(Topic):
    """``tally:<name>``: a list of numbers whose snapshot is the list so far, with the id it is current to."""

    pattern = "tally:{name}"
    history = 10_000

    async def snapshot(self, user, name):
        await asyncio.sleep(0)  # a read of a store awaits: publishes go on meanwhile
        state = TALLIES.get(name, {"values": [], "last_id": None})
        return Snapshot(list(state["values"]), state["last_id"])


class Snapshots(Topic):
    """``snap:<kind>``: a snapshot hook that refuses (``deny``), returns no Snapshot (``bad``), or one
    whose id the history cannot reach (``stale``: it says which attempt it was)."""

    pattern = "snap:{kind}"
    history = 3
    allow_publish = True

    async def snapshot(self, user, kind):
        self.attempts = getattr(self, "attempts", 0) + 1
        if kind == "deny":
            raise Refused("No state for you")
        if kind == "bad":
            return {"not": "a Snapshot"}
        if kind == "stale":
            return Snapshot(f"attempt {self.attempts}", "1")  # long trimmed, or not an id of this history
        return None


class Burst(WebSocketView):
    """``{"name"}`` starts publishing 1, 2, 3 ... on ``tally:<name>``, one per turn of the loop, until
    ``{"stop": true}``: then 0 marks the end, and the answer is every id, in order."""

    throttle_classes = []

    async def on_receive(self, ws, data):
        if "name" in data:
            self.running = True
            self.burst = self._spawn(self._publish(data["name"]))
            return
        self.running = False
        await ws.send_json({"ids": await self.burst})

    async def _publish(self, name):
        state = TALLIES.setdefault(name, {"values": [], "last_id": None})
        ids, value = [], 0
        while True:
            value = value + 1 if self.running else 0
            message_id = await Tally.publish(value, name=name)
            state["values"].append(value)  # applied with its id, in the history's order: one writer
            state["last_id"] = message_id
            ids.append(message_id)
            if not value:
                return ids
            await asyncio.sleep(0)  # one publish per turn of the loop: subscribes come in between


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

    topics = [Open, Owned, Lobby, Picky, Editors, Documents, Tally, Snapshots, Personal]
    throttle_classes = []

    def auto_subscribe(self, user):
        return [f"user:{user.pk}"]


class FiveASecond(MessageRateThrottle):
    rate = "5/s"


class Limited(Sockets):
    throttle_classes = [FiveASecond]


class SessionSockets(Sockets):
    """The TopicSocket above, authenticated by the Django session cookie (or a JWT)."""

    authenticator_class = SessionAuthenticator


class SessionWho(WebSocketView):
    """Says who the socket is: the session's user, or None."""

    authenticator_class = SessionAuthenticator

    async def on_connect(self, ws, **params):
        await ws.send_json({"user": self.user.pk if self.user is not None else None})


class SessionPrivate(SessionWho):
    permission_classes = [IsAuthenticated]


router = Router(prefix="/t14")
router.register_topics("/ws", Sockets)
router.register_topics("/limited", Limited)
router.register_websocket("/burst", Burst)
router.register_websocket("/session/ws", SessionSockets)
router.register_websocket("/session/who", SessionWho)
router.register_websocket("/session/private", SessionPrivate)
