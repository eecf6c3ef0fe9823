"""The demo chat's "online on the site" list (project/chat/online.py) on two real daphne processes
sharing a redis-server of this module's own: kept from the lifecycle events, each delivered to one
process, and published on the channel ``online`` of the demo's TopicSocket (/api/realtime/ws).

A user who connects to one process appears in the list of a chat client of the other; a new chat
client gets the list in its subscribe reply (the topic's snapshot); a user who leaves is removed
once, after the grace window, and a reconnect inside the window changes nothing.
"""

import json

import pytest

from realtime.pubsub.history import key as history_key
from tests.servers import Daphne, prepare_database, require, which
from tests.test_channel_redis import RedisServer
from tests.test_topics_live import opened, receive, request, token_from

pytestmark = pytest.mark.timeout(120)

PATH = "/api/realtime/ws"
#: The lifecycle events' grace window on these servers (seconds).
GRACE = 3


@pytest.fixture(scope="module")
def online_redis(tmp_path_factory):
    require(which("redis-server") is not None, "redis-server")
    redis = RedisServer(tmp_path_factory.mktemp("online-redis")).start()
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
def servers(online_redis, tmp_path_factory, output_dir):
    tmp = tmp_path_factory.mktemp("online")
    env, users = prepare_database(tmp, {"REDIS_URL": online_redis.url, "DEMO_ONLINE_LIST": "1"})
    # tests.events_settings for its short grace window (its own receivers write nowhere without a log)
    env = {**env, "DJANGO_SETTINGS_MODULE": "tests.events_settings", "TEST_LIFECYCLE_GRACE": str(GRACE)}
    daphnes = [Daphne(env, output_dir / f"daphne-online-{name}.log").start() for name in "ab"]
    yield daphnes, users
    for server in daphnes:
        server.stop()


async def signed_in(server, username):
    ws = await opened(server, PATH)
    assert (await request(ws, {"op": "connect", "ref": "c", "token": token_from(server, username)}))["ok"]
    return ws


class Watcher:
    """A chat client of the ``online`` channel: the list from the snapshot, then each change, in order."""

    def __init__(self, ws, snapshot):
        self.ws = ws
        self.online = {user["id"]: user["name"] for user in snapshot["data"]}
        self.changes: list[dict] = []

    @classmethod
    async def start(cls, server, username):
        ws = await signed_in(server, username)
        reply = await request(ws, {"op": "subscribe", "ref": "s", "channel": "online"})
        assert reply["ok"], reply
        return cls(ws, reply["data"]["snapshot"])

    async def until(self, predicate, timeout=GRACE + 15):
        """Apply changes until ``predicate(self.online)`` holds."""
        while not predicate(self.online):
            frame = await receive(self.ws, timeout)
            assert frame["op"] == "message" and frame["channel"] == "online", frame
            change = frame["data"]
            self.changes.append({**change, "id": frame["id"]})
            if change["op"] == "online":
                self.online[change["user"]["id"]] = change["user"]["name"]
            else:
                self.online.pop(change["user"]["id"], None)


async def test_who_connects_appears_in_another_process_and_leaves_once_after_the_grace_window(
        servers, online_redis):
    (a, b), users = servers
    plain, editor, staff = users["plain"], users["editor"], users["staff"]
    watcher = await Watcher.start(a, "plain")
    await watcher.until(lambda online: plain in online)  # in the snapshot, or the change just after it

    tab = await signed_in(b, "editor")  # on the other process, and not a chat client at all
    await watcher.until(lambda online: editor in online)
    assert watcher.online[editor] == "editor"

    # A new chat client on b starts from the list in its subscribe reply: plain's change was stored
    # before the editor's was published (one writer at a time), so it is in the snapshot; the editor's
    # is in it or comes right after it.
    late = await Watcher.start(b, "staff")
    assert plain in late.online
    await late.until(lambda online: {editor, staff} <= set(online))

    # The editor leaves and comes back at once on a (inside the window): nothing changes. Then leaves.
    await tab.close()
    again = await signed_in(a, "editor")
    await again.close()
    for client in (watcher, late):
        await client.until(lambda online: editor not in online)
    editor_changes = [(c["op"], c["user"]["id"]) for c in watcher.changes if c["user"]["id"] == editor]
    assert editor_changes == [("online", editor), ("offline", editor)]
    assert len({c["id"] for c in watcher.changes}) == len(watcher.changes)
    assert set(watcher.online) == set(late.online) == {plain, staff}

    # Each change was published once, whichever process handled its event: the channel's history.
    stored = [json.loads(fields[b"m"]) for _, fields in online_redis.client().xrange(history_key("online"))]
    assert [(m["op"], m["user"]["id"]) for m in stored if m["user"]["id"] == editor] == editor_changes

    # Nobody else may write the list: a publish is refused, and so is a client that is not logged in.
    refused = await request(watcher.ws, {"op": "publish", "ref": "p", "channel": "online",
                                         "data": {"op": "online", "user": {"id": 1, "name": "mallory"}}})
    assert refused["ok"] is False
    anonymous = await opened(a, PATH)
    denied = await request(anonymous, {"op": "subscribe", "ref": "s", "channel": "online"})
    assert (denied["ok"], denied["error"]["code"]) == (False, "forbidden")
    for ws in (anonymous, watcher.ws, late.ws):
        await ws.close()
    # No writer holds the board's lock once the changes are handled.
    client = online_redis.client()
    assert client.exists("demo:1:chat:online:board") == 1
    assert client.exists("demo:1:chat:online:lock") == 0
