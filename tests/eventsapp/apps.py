"""Receivers of the four lifecycle events that write each call, one JSON line, to ``TEST_LIFECYCLE_LOG``.

Both kinds of receiver are here: async ones for the user events, sync ones (run in a thread by
Django's ``asend``) for the channel events. A user named ``lc-fails`` makes ``user_online`` raise
after it has written its line: the entry must still be acknowledged and never run again. The user
``TEST_LIFECYCLE_HANGING_USER`` makes the first ``user_online`` run of an entry hang (a process that
never finishes it); a run of the same entry claimed by another process finishes.
"""

import asyncio
import json
import os
from pathlib import Path

from django.apps import AppConfig


def record(event, key, event_id):
    path = os.environ.get("TEST_LIFECYCLE_LOG")
    if not path:
        return
    line = json.dumps({"event": event, "key": key, "id": event_id, "pid": os.getpid()}) + "\n"
    with open(path, "a") as log:  # one short append per line: whole lines from several processes
        log.write(line)


class EventsAppConfig(AppConfig):
    name = "tests.eventsapp"
    label = "eventsapp"

    def ready(self):
        from realtime.events import channel_occupied, channel_vacated, user_offline, user_online

        async def online(sender, user_id, event_id, at, **kwargs):
            hangs = user_id == int(os.environ.get("TEST_LIFECYCLE_HANGING_USER", "-1"))
            log = Path(os.environ.get("TEST_LIFECYCLE_LOG", os.devnull))
            again = hangs and log.exists() and event_id in log.read_text()
            record("user_online", user_id, event_id)
            if hangs and not again:
                await asyncio.Event().wait()  # until the process is killed
            if user_id == int(os.environ.get("TEST_LIFECYCLE_FAILING_USER", "-1")):
                raise RuntimeError("a receiver that fails")

        async def offline(sender, user_id, event_id, at, **kwargs):
            record("user_offline", user_id, event_id)

        def occupied(sender, channel, event_id, at, **kwargs):
            record("channel_occupied", channel, event_id)

        def vacated(sender, channel, event_id, at, **kwargs):
            record("channel_vacated", channel, event_id)

        for signal, receiver in ((user_online, online), (user_offline, offline),
                                 (channel_occupied, occupied), (channel_vacated, vacated)):
            signal.connect(receiver, weak=False, dispatch_uid=f"tests.eventsapp.{receiver.__name__}")
