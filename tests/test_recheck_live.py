"""Permissions that change while connected, on two real daphne processes sharing the Redis at
127.0.0.1:6379: a group removed, ``is_staff`` cleared, an object's owner changed and
``realtime.recheck(user)``. Every change is made in a third process (``manage.py shell``), as an
admin or a task would, and reaches the connections each daphne holds."""

import asyncio
import json
import subprocess
import uuid

import httpx
import pytest
import redis
import websockets
from websockets.exceptions import ConnectionClosed

from realtime.pubsub.channel import group_name
from realtime.revocation import CONTROL_CHANNEL
from tests.isolation import redis_db
from tests.servers import PYTHON, ROOT, Daphne, prepare_database, redis_available, require
from tests.sse_client import text_until
from tests.test_topics_live import opened, receive, request, until
from tests.waiting import await_until, layer_group, redis_subscriptions

pytestmark = pytest.mark.timeout(180)

#: The users of this module, each in the ``editor`` group, and a Document owned by ``rc-doc``.
SETUP = """
from django.contrib.auth.models import Group, User
from tests.liveapp.management.commands.seed_test_users import PASSWORD
from tests.topicsapp.models import Document
editor = Group.objects.get(name="editor")
for name in ("rc-topic", "rc-view", "rc-staff", "rc-doc"):
    user = User.objects.create_user(name, password=PASSWORD, is_staff=name == "rc-staff")
    user.groups.add(editor)
    print(f"{name}={user.pk}")
print(f"document={Document.objects.create(owner=User.objects.get(username='rc-doc')).pk}")
"""


def shell(env, code):
    result = subprocess.run([PYTHON, "manage.py", "shell", "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def ashell(env, code):
    return await asyncio.to_thread(shell, env, code)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, output_dir):
    """Two daphne processes sharing one SQLite file and the Redis at 127.0.0.1:6379 (own layer prefix)."""
    require(redis_available(), "Redis on 127.0.0.1:6379")
    prefix = f"test-recheck-{uuid.uuid4().hex[:12]}"
    env, users = prepare_database(
        tmp_path_factory.mktemp("recheck"),
        {"DJANGO_SETTINGS_MODULE": "tests.auth_settings", "REDIS_URL": f"redis://127.0.0.1:6379/{redis_db()}",
         "CHANNEL_LAYER_PREFIX": prefix},
    )
    made = [line.split("=") for line in shell(env, SETUP).splitlines() if line.startswith(("rc-", "document="))]
    users.update({name: int(pk) for name, pk in made})
    a = Daphne(env, output_dir / "daphne-recheck-a.log").start()
    b = Daphne(env, output_dir / "daphne-recheck-b.log").start()
    yield a, b, env, users
    a.stop()
    b.stop()


def token_for(server, username):
    from tests.liveapp.management.commands.seed_test_users import PASSWORD

    response = httpx.post(f"{server.url}/api/auth/token/", json={"username": username, "password": PASSWORD})
    response.raise_for_status()
    return response.json()["access"]


async def both_listen(env):
    """Both processes hold a connection of someone, so both subscribe to the control channel."""
    control = layer_group(group_name(CONTROL_CHANNEL), env["CHANNEL_LAYER_PREFIX"])
    broker = redis.Redis.from_url(env["REDIS_URL"])
    await await_until(lambda: redis_subscriptions(broker, control) == 2, interval=0.05,
                      message="both processes subscribed to the control channel")


async def close_of(ws, timeout=5):
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def signed_in(server, username):
    """A TopicSocket connection signed in as ``username``."""
    ws = await opened(server)
    answer = await request(ws, {"op": "connect", "ref": "c", "token": await asyncio.to_thread(token_for, server,
                                                                                            username)})
    assert answer["ok"], answer
    return ws


async def nothing_within(ws, seconds):
    """True when no frame arrives within ``seconds`` (the change under test must not act)."""
    try:
        frame = await asyncio.wait_for(ws.recv(), seconds)
    except TimeoutError:
        return True
    raise AssertionError(f"unexpected frame {frame}")


async def test_a_user_removed_from_a_group_is_unsubscribed_from_that_topic_and_keeps_the_others(pair):
    a, b, env, _ = pair
    ws = await signed_in(a, "rc-topic")
    bystander = await signed_in(b, "editor")  # another editor, on the other process
    for socket in (ws, bystander):
        assert (await request(socket, {"op": "subscribe", "ref": "e", "channel": "editors:news"}))["ok"]
    assert (await request(ws, {"op": "subscribe", "ref": "o", "channel": "open:recheck"}))["ok"]
    await both_listen(env)

    await ashell(env, "from django.contrib.auth.models import Group, User; "
                      "User.objects.get(username='rc-topic').groups.remove(Group.objects.get(name='editor'))")

    assert await until(ws, "unsubscribed") == {
        "op": "unsubscribed", "channel": "editors:news",
        "reason": {"code": "forbidden", "detail": "Role 'editor' required"},
    }
    # The other channel goes on, and the connection with it.
    # The publisher's own message and its answer may come in either order (no order is promised).
    await ws.send(json.dumps({"op": "publish", "ref": "p", "channel": "open:recheck", "data": {"n": 1}}))
    frames = [await receive(ws), await receive(ws)]
    published = next(frame for frame in frames if frame.get("ref") == "p")
    assert published["ok"], published
    message = next(frame for frame in frames if frame.get("op") == "message")
    assert (message["channel"], message["data"]) == ("open:recheck", {"n": 1})
    # The channel is gone from the connection: subscribing again is refused as any new subscribe would be.
    again = await request(ws, {"op": "subscribe", "ref": "e2", "channel": "editors:news"})
    assert again["error"] == {"code": "forbidden", "detail": "Role 'editor' required"}
    # The other editor's subscription is untouched.
    assert (await request(bystander, {"op": "ping", "ref": "still"}))["ok"]
    assert await nothing_within(bystander, 0.3)
    assert (await request(bystander, {"op": "unsubscribe", "ref": "u", "channel": "editors:news"}))["ok"]
    await ws.close()
    await bystander.close()


async def test_a_view_and_an_sse_stream_whose_role_is_gone_end_in_both_processes(pair):
    a, b, env, _ = pair
    token = await asyncio.to_thread(token_for, a, "rc-view")
    ws = await websockets.connect(f"{a.ws_url}/api/t/editor-only?token={token}")
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["user"] == "rc-view"
    editor = await asyncio.to_thread(token_for, a, "editor")
    other = await websockets.connect(f"{a.ws_url}/api/t/editor-only?token={editor}")
    assert json.loads(await asyncio.wait_for(other.recv(), 5))["user"] == "editor"
    async with httpx.AsyncClient(timeout=10) as client, client.stream(
        "GET", f"{b.url}/api/t/sse/editor-forever?token={token}"
    ) as sse:
        assert sse.status_code == 200
        body = sse.aiter_text()
        assert "event: open" in await text_until(body, "event: open")
        await both_listen(env)

        # From the group's side this time: group.user_set.remove(user).
        await ashell(env, "from django.contrib.auth.models import Group, User; "
                          "Group.objects.get(name='editor').user_set.remove(User.objects.get(username='rc-view'))")

        assert await close_of(ws) == (4003, "Role 'editor' required")
        async with asyncio.timeout(5):
            rest = "".join([chunk async for chunk in body])  # the stream ends
    assert rest.endswith('event: error\ndata: {"code":"missing_role","detail":"Role \'editor\' required"}\n\n')
    pong = await other.ping()  # another editor's connection on the same process is untouched
    await asyncio.wait_for(pong, 5)
    await other.close()


async def test_clearing_is_staff_closes_an_admin_view_in_both_processes_through_post_save(pair):
    a, b, env, _ = pair
    token = await asyncio.to_thread(token_for, a, "rc-staff")
    on_a = await websockets.connect(f"{a.ws_url}/api/t/admin-only?token={token}")
    on_b = await websockets.connect(f"{b.ws_url}/api/t/admin-only?token={token}")
    for ws in (on_a, on_b):
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["user"] == "rc-staff"
    await both_listen(env)

    await ashell(env, "from django.contrib.auth.models import User; "
                      "user = User.objects.get(username='rc-staff'); user.is_staff = False; user.save()")

    assert await close_of(on_a) == (4003, "Administrator access required")
    assert await close_of(on_b) == (4003, "Administrator access required")


async def test_recheck_after_an_ownership_change_no_signal_sees_unsubscribes_the_former_owner(pair):
    a, b, env, users = pair
    document = users["document"]
    ws = await signed_in(b, "rc-doc")
    assert (await request(ws, {"op": "subscribe", "ref": "d", "channel": f"doc:{document}"}))["ok"]
    assert (await request(ws, {"op": "subscribe", "ref": "o", "channel": "open:owners"}))["ok"]
    keeper = await signed_in(a, "plain")  # so that both processes listen
    await both_listen(env)

    # QuerySet.update() sends no signal: the former owner keeps the channel...
    await ashell(env, "from tests.topicsapp.models import Document; "
                      f"Document.objects.filter(pk={document}).update(owner_id={users['plain']})")
    assert await nothing_within(ws, 0.5)
    # ...until realtime.recheck(user), from that same kind of code.
    await ashell(env, f"import realtime; from django.contrib.auth.models import User; "
                      f"realtime.recheck(User.objects.get(pk={users['rc-doc']}))")

    assert await receive(ws) == {
        "op": "unsubscribed", "channel": f"doc:{document}",
        "reason": {"code": "forbidden", "detail": "You are not the owner"},
    }
    assert (await request(ws, {"op": "presence", "ref": "p", "channel": "open:owners"}))["ok"]
    refused = await request(ws, {"op": "presence", "ref": "p2", "channel": f"doc:{document}"})
    assert refused["error"]["code"] == "not_subscribed"
    # The new owner may subscribe.
    assert (await request(keeper, {"op": "subscribe", "ref": "d", "channel": f"doc:{document}"}))["ok"]
    await ws.close()
    await keeper.close()
