"""The HTTP publish API on real daphne processes: every status, idempotency across two processes on Redis,
scopes, and the key that is never stored in clear.

Two daphne (``a``, ``b``) share one SQLite file and Redis; a third (``down``) has a REDIS_URL where
nothing listens. What subscribers are given is read from the channels' Redis Streams (every subscriber
of a history channel, in every process, is fed from there), so "published once" is counted exactly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from realtime.idempotency import fingerprint, record_key
from realtime.pubsub.history import key as history_key
from tests.docs_blocks import marked
from tests.isolation import redis_db
from tests.servers import PYTHON, ROOT, Daphne, free_port, prepare_database, redis_available, require

pytestmark = pytest.mark.timeout(120)

REDIS = f"redis://127.0.0.1:6379/{redis_db()}"
CHANNEL = "live-commit-0"
STREAM = history_key(CHANNEL)
ROOT_PASSWORD = "root-pass-123456"


@pytest.fixture(scope="module")
def servers(tmp_path_factory, output_dir):
    require(redis_available(), "Redis on 127.0.0.1:6379")
    env, _ = prepare_database(tmp_path_factory.mktemp("publish-api"), {
        "DJANGO_SETTINGS_MODULE": "tests.publish_settings", "REDIS_URL": REDIS,
        "CHANNEL_LAYER_PREFIX": f"test-publish-{uuid.uuid4().hex[:12]}",
    })
    subprocess.run([PYTHON, "manage.py", "createsuperuser", "--noinput", "--username", "root", "--email", "r@x.org"],
                   cwd=ROOT, env={**env, "DJANGO_SUPERUSER_PASSWORD": ROOT_PASSWORD}, check=True, capture_output=True)
    a = Daphne(env, output_dir / "daphne-publish-a.log").start()
    b = Daphne(env, output_dir / "daphne-publish-b.log").start()
    down = Daphne({**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
                  output_dir / "daphne-publish-down.log").start()
    yield a, b, down, env
    for server in (a, b, down):
        server.stop()


@pytest.fixture
def stream():
    client = redis.Redis.from_url(REDIS)
    client.delete(STREAM)
    yield client
    client.close()


def entries(client: redis.Redis) -> list[tuple[str, object]]:
    return [(i.decode(), json.loads(f[b"m"])) for i, f in client.xrange(STREAM)]


def new_key(env: dict[str, str], *patterns: str, inactive: bool = False) -> tuple[int, str]:
    """A fresh API key (its own rate bucket) allowed on ``patterns``."""
    args = [PYTHON, "manage.py", "create_api_key", f"svc-{uuid.uuid4().hex[:6]}", *(patterns or ["live-commit-*"])]
    out = subprocess.run([*args, *(["--inactive"] if inactive else [])], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return int(out[0]), out[1]


def post(server: Daphne, path: str, body: object, key: str | None, **headers: str) -> httpx.Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers.setdefault("Content-Type", "application/json")
    return httpx.post(f"{server.url}/api/realtime/{path}", content=content, headers=headers, timeout=10)


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == code and body["detail"]
    return body


# -- publishing -------------------------------------------------------------------------------------------


def test_a_publish_answers_the_message_id_subscribers_get_it_under(servers, stream):
    a, _, _, env = servers
    _, key = new_key(env)
    response = post(a, "publish", {"channel": CHANNEL, "data": {"notice": "markets close early"}}, key)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["channel"] == CHANNEL
    assert entries(stream) == [(answer["id"], {"notice": "markets close early"})]


def test_a_batch_publishes_in_order_and_answers_each_id(servers, stream):
    a, _, _, env = servers
    _, key = new_key(env)
    messages = [{"channel": CHANNEL, "data": {"n": n}} for n in range(3)]
    response = post(a, "publish/batch", {"messages": messages}, key)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["id"], {"n": n}) for n, r in enumerate(results)] == entries(stream)
    assert all(r["channel"] == CHANNEL for r in results)


def test_a_topics_channel_is_published_as_its_subscribers_read_it_with_the_topics_history(servers, stream):
    a, _, _, env = servers
    _, key = new_key(env, "open:*")  # tests/topicsapp: Open, pattern "open:{name}", history = 50
    topic_stream = history_key("open:from-http")
    stream.delete(topic_stream)
    response = post(a, "publish", {"channel": "open:from-http", "data": {"hi": 1}}, key)
    assert response.status_code == 200, response.text
    assert response.json()["id"] is not None  # a plain Channel would have no history, hence no id
    assert [(i.decode(), json.loads(f[b"m"])) for i, f in stream.xrange(topic_stream)] == [
        (response.json()["id"], {"hi": 1})]


def test_a_channel_outside_the_keys_patterns_is_refused_with_403_and_a_batch_publishes_nothing(servers, stream):
    a, _, _, env = servers
    _, key = new_key(env, "live-commit-0", "orders:*")
    refused = assert_error(post(a, "publish", {"channel": "live-commit-1", "data": 1}, key), 403, "channel_not_allowed")
    assert refused["channels"] == ["live-commit-1"]
    batch = {"messages": [{"channel": CHANNEL, "data": 1}, {"channel": "secrets", "data": 2}]}
    assert assert_error(post(a, "publish/batch", batch, key), 403, "channel_not_allowed")["channels"] == ["secrets"]
    assert entries(stream) == []  # the allowed message of the batch did not go out either
    assert post(a, "publish", {"channel": "orders:42", "data": 1}, key).status_code == 200


# -- each refusal, with its status and JSON ----------------------------------------------------------------


def test_missing_malformed_unknown_and_inactive_keys_answer_401_with_a_challenge(servers, stream):
    a, _, _, env = servers
    _, inactive = new_key(env, inactive=True)
    _, good = new_key(env)
    message = {"channel": CHANNEL, "data": 1}
    for key, code in ((None, "not_authenticated"), ("rtk_nope", "invalid_key"), (good[:-2] + "xx", "invalid_key"),
                      (inactive, "invalid_key")):
        response = post(a, "publish", message, key)
        assert_error(response, 401, code)
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="realtime-publish"'
    assert entries(stream) == []


def test_bad_requests_answer_400_405_413_and_415(servers, stream):
    a, _, _, env = servers
    _, key = new_key(env)
    assert_error(post(a, "publish", b"{not json", key), 400, "invalid_json")
    assert_error(post(a, "publish", b'{"channel": "live-commit-0", "data": NaN}', key), 400, "invalid_json")
    assert_error(post(a, "publish", {"channel": CHANNEL}, key), 400, "invalid_request")
    assert_error(post(a, "publish", {"channel": "", "data": 1}, key), 400, "invalid_request")
    assert_error(post(a, "publish/batch", {"messages": []}, key), 400, "invalid_request")
    assert_error(post(a, "publish", {"channel": CHANNEL, "data": 1}, key, **{"Idempotency-Key": "a b"}), 400,
                 "invalid_idempotency_key")
    assert_error(post(a, "publish", {"channel": CHANNEL, "data": "x" * 5000}, key), 413, "too_large")
    six = {"messages": [{"channel": CHANNEL, "data": n} for n in range(6)]}
    assert_error(post(a, "publish/batch", six, key), 413, "too_many_messages")
    assert_error(post(a, "publish", b"channel=x", key, **{"Content-Type": "text/plain"}), 415,
                 "unsupported_media_type")
    response = httpx.get(f"{a.url}/api/realtime/publish", headers={"Authorization": f"Bearer {key}"})
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "POST"
    assert entries(stream) == []


def test_over_the_keys_rate_answers_429_with_retry_after(servers, stream):
    a, _, _, env = servers
    _, key = new_key(env)
    started, statuses = time.monotonic(), []
    while 429 not in statuses and len(statuses) < 100:  # "30/m": a burst of 30, then one every 2 s
        response = post(a, "publish", {"channel": CHANNEL, "data": len(statuses)}, key)
        statuses.append(response.status_code)
    elapsed = time.monotonic() - started
    assert statuses[:30] == [200] * 30
    assert statuses[-1] == 429 and set(statuses[:-1]) == {200}
    assert len(statuses) - 1 <= 30 + elapsed / 2 + 1  # no more than the burst and what refilled meanwhile
    assert_error(response, 429, "rate_limited")
    assert int(response.headers["Retry-After"]) >= 1
    assert len(entries(stream)) == len(statuses) - 1
    _, other = new_key(env)  # the bucket is the key's: another key is not limited
    assert post(a, "publish", {"channel": CHANNEL, "data": 0}, other).status_code == 200


def test_redis_unreachable_answers_503_with_retry_after_and_publishes_nothing(servers, stream):
    _, _, down, env = servers
    _, key = new_key(env)
    body = assert_error(post(down, "publish/batch", {"messages": [{"channel": CHANNEL, "data": 1}]}, key), 503,
                        "broker_unavailable")
    assert body["results"] == []
    response = post(down, "publish", {"channel": CHANNEL, "data": 1}, key, **{"Idempotency-Key": "k-down"})
    assert_error(response, 503, "broker_unavailable")
    assert response.headers["Retry-After"] == "5"


# -- idempotency --------------------------------------------------------------------------------------------


def test_a_retry_with_the_same_idempotency_key_on_another_process_publishes_once_and_gets_the_same_ids(
        servers, stream):
    a, b, _, env = servers
    _, key = new_key(env)
    batch = {"messages": [{"channel": CHANNEL, "data": {"order": 1}}, {"channel": CHANNEL, "data": {"order": 2}}]}
    first = post(a, "publish/batch", batch, key, **{"Idempotency-Key": "order-1"})
    retry = post(b, "publish/batch", batch, key, **{"Idempotency-Key": "order-1"})
    assert first.status_code == retry.status_code == 200
    assert retry.json() == first.json()
    assert retry.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert [i for i, _ in entries(stream)] == [r["id"] for r in first.json()["results"]]  # two entries, not four
    changed = {"messages": [{"channel": CHANNEL, "data": {"order": 3}}]}
    assert_error(post(b, "publish/batch", changed, key, **{"Idempotency-Key": "order-1"}), 422,
                 "idempotency_key_reused")
    _, other = new_key(env)  # keys are per API key: another client's "order-1" is its own
    assert post(a, "publish/batch", batch, other, **{"Idempotency-Key": "order-1"}).headers.get(
        "Idempotent-Replayed") is None
    assert len(entries(stream)) == 4


async def test_concurrent_retries_on_two_processes_publish_once(servers, stream):
    a, b, _, env = servers
    _, key = new_key(env)
    message = {"channel": CHANNEL, "data": {"payment": 7}}
    async with httpx.AsyncClient(timeout=10) as client:
        responses = await asyncio.gather(*(
            client.post(f"{server.url}/api/realtime/publish", json=message,
                        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "payment-7"})
            for server in [a, b] * 6
        ))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 409}, statuses
    published = entries(stream)
    assert len(published) == 1
    assert {r.json()["id"] for r in responses if r.status_code == 200} == {published[0][0]}
    assert all(r.headers["Retry-After"] == "1" for r in responses if r.status_code == 409)


def test_a_key_held_by_a_request_in_progress_answers_409(servers, stream):
    a, _, _, env = servers
    pk, key = new_key(env)
    body = json.dumps({"channel": CHANNEL, "data": 1}).encode()
    pending = {"fp": fingerprint("/api/realtime/publish", body), "state": "pending", "results": [], "token": "t"}
    stream.set(record_key(pk, "busy-1"), json.dumps(pending), px=30000)  # as a process in the middle of it would
    assert_error(post(a, "publish", body, key, **{"Idempotency-Key": "busy-1"}), 409, "idempotency_in_progress")
    assert entries(stream) == []


def test_the_docs_curl_example_publishes_as_it_says(servers, stream):
    """docs/reference/publish-api.md's curl lines, run by bash against a live daphne with a real key."""
    a, _, _, env = servers
    _, key = new_key(env, "market-notices", "orders:*")
    (block,) = [b for b in marked("exec") if b.argument == "publish-curl"]
    script = block.code.replace("http://127.0.0.1:8000", a.url).replace("rtk_0a1b2c3d_...", key)
    out = subprocess.run(["bash", "-e"], input=script, capture_output=True, text=True, timeout=30, check=True).stdout
    answers, decoder, at = [], json.JSONDecoder(), 0
    while at < len(out.rstrip()):  # curl prints the two answers back to back
        answer, at = decoder.raw_decode(out, at)
        answers.append(answer)
    said = [json.loads(line.split("#", 1)[1].split("  ")[0]) for line in block.code.splitlines()
            if line.startswith("# {")]
    assert answers == said


# -- the admin -----------------------------------------------------------------------------------------------


def test_the_admin_shows_a_new_key_once_and_stores_only_its_hash(servers, stream, tmp_path):
    a, _, _, env = servers
    with httpx.Client(base_url=a.url, timeout=10, follow_redirects=True) as browser:
        login = browser.get("/admin/login/")
        token = browser.cookies["csrftoken"]
        browser.post("/admin/login/", data={"username": "root", "password": ROOT_PASSWORD,
                                            "csrfmiddlewaretoken": token, "next": "/admin/"})
        add = browser.get("/admin/realtime/apikey/add/")
        assert add.status_code == 200, login.text[:300]
        created = browser.post("/admin/realtime/apikey/add/", data={
            "name": "billing", "channels": "live-commit-*", "is_active": "on",
            "csrfmiddlewaretoken": browser.cookies["csrftoken"],
        })
        assert created.status_code == 200
        assert "no-store" in created.headers["Cache-Control"]
        secret = re.search(r'<code id="api-key"[^>]*>(rtk_[^<]+)</code>', created.text)[1]
        listing = browser.get("/admin/realtime/apikey/")
        assert "billing" in listing.text and secret not in listing.text
        assert secret not in browser.get(listing.url).text
    assert post(a, "publish", {"channel": CHANNEL, "data": "from billing"}, secret).status_code == 200
    database = Path(env["DJANGO_SQLITE_PATH"])
    stored = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))  # with -wal, -journal
    assert secret.encode() not in stored
    assert secret.split("_", 2)[2].encode() not in stored
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored
