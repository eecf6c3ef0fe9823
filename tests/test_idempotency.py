"""The Idempotency-Key protocol (realtime.idempotency) on both stores: Redis and this process's memory."""

import uuid

import pytest

from realtime.idempotency import MemoryIdempotencyStore, RedisIdempotencyStore, valid_key
from tests.isolation import redis_db
from tests.servers import redis_available, require

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["memory", "redis"])
async def records(request):
    if request.param == "memory":
        yield MemoryIdempotencyStore()
        return
    require(redis_available(), "Redis on 127.0.0.1:6379")
    store = RedisIdempotencyStore(f"redis://127.0.0.1:6379/{redis_db()}")
    yield store
    await store.client.aclose()


async def test_a_claimed_key_is_busy_then_replays_its_answer_and_refuses_another_request(records, settings):
    key = f"test:{uuid.uuid4().hex}"
    first = await records.claim(key, "fp-1")
    assert first.state == "new" and first.results == []
    assert (await records.claim(key, "fp-1")).state == "busy"
    assert (await records.claim(key, "fp-2")).state == "mismatch"
    await records.finish(key, first, "fp-1", 200, {"id": "x"})
    replay = await records.claim(key, "fp-1")
    assert (replay.state, replay.status, replay.body) == ("done", 200, {"id": "x"})


async def test_a_batch_stopped_by_an_outage_resumes_after_what_went_out(records):
    key = f"test:{uuid.uuid4().hex}"
    first = await records.claim(key, "fp")
    await records.stopped(key, first, "fp", [{"channel": "a", "id": "1-0"}])
    retry = await records.claim(key, "fp")
    assert retry.state == "new" and retry.results == [{"channel": "a", "id": "1-0"}]
    assert (await records.claim(key, "fp")).state == "busy"  # the retry holds it now


async def test_an_answer_is_kept_only_by_the_request_that_still_holds_the_key(records):
    key = f"test:{uuid.uuid4().hex}"
    first = await records.claim(key, "fp")
    await records.finish(key, first, "fp", 200, {"id": "first"})
    await records.finish(key, first, "fp", 200, {"id": "late"})  # it no longer holds a pending record
    assert (await records.claim(key, "fp")).body == {"id": "first"}


@pytest.mark.parametrize(("value", "valid"), [("order-1", True), ("x" * 255, True), ("", False), ("x" * 256, False),
                                              ("a b", False), ("é", False)])
def test_idempotency_keys_are_1_to_255_visible_ascii_characters(value, valid):
    assert valid_key(value) is valid
