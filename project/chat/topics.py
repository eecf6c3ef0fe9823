"""The demo's chat rooms: anyone may read a room, logged-in users are its members and may write."""

import time

from realtime import Refused, Topic
from realtime.permissions import is_authenticated

MAX_TEXT = 500


class Room(Topic):
    """``room:<slug>``: chat messages with who is online, and the last 200 messages to resume from."""

    pattern = "room:{name:slug}"
    presence = True
    history = 200

    def member_info(self, user):
        return {"name": user.get_username()}

    async def on_publish(self, user, data, **params):
        """``{"text": "..."}`` from a logged-in user becomes ``{"text", "user": {"id", "name"}, "at"}``."""
        if not is_authenticated(user):
            raise Refused("Log in to chat")
        text = data.get("text") if isinstance(data, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise Refused("A chat message is {\"text\": \"...\"}, not empty")
        return {"text": text[:MAX_TEXT], "user": {"id": user.pk, "name": user.get_username()}, "at": time.time()}
