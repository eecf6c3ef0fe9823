"""The HTTP publish API: other services (any language) publish to channels with an API key.

Wire it in the project's ``urls.py``::

    path("api/realtime/", include("realtime.publish_api")),   # POST publish, POST publish/batch

``POST publish`` takes ``{"channel": "orders:42", "data": {...}}`` and answers ``200 {"channel":
"orders:42", "id": "<history id or null>"}``; ``POST publish/batch`` takes ``{"messages": [{"channel":
..., "data": ...}, ...]}`` and answers ``{"results": [{"channel": ..., "id": ...}, ...]}`` in order.
The key goes in ``Authorization: Bearer rtk_...`` (created in the Django admin, stored hashed, scoped
to channel patterns). ``Idempotency-Key: <any 1-255 visible characters>`` makes a retry publish once
(:mod:`realtime.idempotency`). Errors are ``{"detail": "...", "code": "..."}`` with:

- 400 invalid_json, invalid_request, invalid_idempotency_key
- 401 not_authenticated (no key), invalid_key (unknown, malformed or inactive); WWW-Authenticate
- 403 channel_not_allowed (with ``channels``: those outside the key's patterns; nothing published)
- 405 method_not_allowed (only POST)
- 409 idempotency_in_progress (a request with this key is being handled; retry shortly)
- 413 too_large (over REALTIME["PUBLISH_API_MAX_BODY"] bytes), too_many_messages (PUBLISH_API_MAX_BATCH)
- 415 unsupported_media_type (send Content-Type: application/json)
- 422 idempotency_key_reused (the key was used for a different request)
- 429 rate_limited (REALTIME["PUBLISH_API_RATE"] requests per key and process); Retry-After
- 503 broker_unavailable (Redis unreachable: nothing, or only ``results``, published); Retry-After

Validation comes before any publish: a batch with one bad or forbidden message publishes nothing.
A batch stopped by an outage answers 503 with the ``results`` that did go out; retried with the
same Idempotency-Key it publishes only the rest.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from .asyncapi import project_routers
from .conf import setting
from .encoding import loads
from .idempotency import fingerprint, record_key, store, valid_key
from .pubsub.broker import BrokerUnavailable, is_unreachable
from .pubsub.channel import Channel, registry
from .throttling import PublishRateThrottle

logger = logging.getLogger("realtime.publish_api")

#: Seconds a client should wait after a 503.
RETRY_AFTER = 5
MAX_CHANNEL_LENGTH = 200

_throttles: dict[int, PublishRateThrottle] = {}


class Refusal(Exception):
    """An answer other than 200: status, code, detail, and extra fields or headers."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers, self.extra = status, code, detail, headers or {}, extra

    def response(self) -> JsonResponse:
        response = JsonResponse({"detail": self.detail, "code": self.code, **self.extra}, status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


async def authenticate(request: HttpRequest) -> Any:
    """The active ApiKey of ``Authorization: Bearer rtk_...``, else Refusal(401)."""
    from .models import ApiKey
    from .models.apikey import split_key

    challenge = {"WWW-Authenticate": 'Bearer realm="realtime-publish"'}
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Refusal(401, "not_authenticated", "Send the API key as Authorization: Bearer rtk_...", challenge)
    key = key.strip()
    prefix = split_key(key)
    api_key = await ApiKey.objects.filter(prefix=prefix, is_active=True).afirst() if prefix else None
    if api_key is None or not api_key.matches(key):
        raise Refusal(401, "invalid_key", "The API key is unknown, malformed or inactive", challenge)
    return api_key


def throttle(api_key: Any) -> None:
    bucket = _throttles.get(api_key.pk)
    if bucket is None:
        bucket = _throttles[api_key.pk] = PublishRateThrottle()
    if not bucket.allow_message(None, None):
        wait = max(1, math.ceil(bucket.retry_after()))
        raise Refusal(429, "rate_limited", f"Over {setting('PUBLISH_API_RATE')} for this API key; retry in {wait} s",
                      {"Retry-After": str(wait)})


def read_body(request: HttpRequest) -> Any:
    """The request's JSON, after the media type and size checks."""
    media_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise Refusal(415, "unsupported_media_type", "Send the body as JSON with Content-Type: application/json")
    limit = setting("PUBLISH_API_MAX_BODY")
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > limit or len(request.body) > limit:
        raise Refusal(413, "too_large", f"The body is over {limit} bytes (REALTIME['PUBLISH_API_MAX_BODY'])")
    try:
        return loads(request.body)
    except (ValueError, UnicodeDecodeError) as error:
        raise Refusal(400, "invalid_json", f"The body is not strict JSON in UTF-8: {error}") from None


def parse_message(item: Any, where: str) -> tuple[str, Any]:
    if not isinstance(item, dict) or set(item) - {"channel", "data"} or "data" not in item:
        raise Refusal(400, "invalid_request", f'{where} must be {{"channel": "<name>", "data": <JSON>}} and no more')
    name = item.get("channel")
    if not isinstance(name, str) or not name or len(name) > MAX_CHANNEL_LENGTH:
        raise Refusal(400, "invalid_request", f"{where}.channel must be a name of 1-{MAX_CHANNEL_LENGTH} characters")
    return name, item["data"]


def channel_for(name: str) -> Channel:
    """The Channel a subscriber of ``name`` reads: declared in this process, a topic's, or a plain one."""
    channel = registry.get(name)
    if channel is not None:
        return channel
    for router in project_routers():
        for route in router.routes:
            for topic in getattr(route.view, "topics", None) or ():
                if topic.match(name) is not None:
                    return topic.channel(name)
    return Channel(name)


async def handle(request: HttpRequest, batch: bool) -> JsonResponse:
    if request.method != "POST":
        raise Refusal(405, "method_not_allowed", "Use POST", {"Allow": "POST"})
    api_key = await authenticate(request)
    throttle(api_key)
    body = read_body(request)
    if batch:
        items = body.get("messages") if isinstance(body, dict) and set(body) == {"messages"} else None
        if not isinstance(items, list) or not items:
            raise Refusal(400, "invalid_request", 'Send {"messages": [{"channel": ..., "data": ...}, ...]}')
        if len(items) > setting("PUBLISH_API_MAX_BATCH"):
            raise Refusal(413, "too_many_messages",
                          f"At most {setting('PUBLISH_API_MAX_BATCH')} messages per batch; got {len(items)}")
        messages = [parse_message(item, f"messages[{n}]") for n, item in enumerate(items)]
    else:
        messages = [parse_message(body, "The body")]
    refused = sorted({name for name, _ in messages if not api_key.allows(name)})
    if refused:
        raise Refusal(403, "channel_not_allowed", "This API key may not publish to these channels; nothing was "
                      "published", channels=refused)
    idempotency_key = request.headers.get("Idempotency-Key")
    if idempotency_key is None:
        results = await publish_all(messages, [])
        return answer(results, batch)
    if not valid_key(idempotency_key):
        raise Refusal(400, "invalid_idempotency_key", "An Idempotency-Key is 1-255 visible ASCII characters")
    return await publish_once(request, api_key, idempotency_key, messages, batch)


async def publish_once(request: HttpRequest, api_key: Any, idempotency_key: str, messages: list[tuple[str, Any]],
                       batch: bool) -> JsonResponse:
    records, key = store(), record_key(api_key.pk, idempotency_key)
    fp = fingerprint(request.path, request.body)
    try:
        claim = await records.claim(key, fp)
    except Exception as error:
        if is_unreachable(error):
            detail = "Redis is unreachable (the Idempotency-Key cannot be checked); nothing was published"
            raise _unavailable(detail) from None
        raise
    if claim.state == "mismatch":
        raise Refusal(422, "idempotency_key_reused", "This Idempotency-Key was used for a different request")
    if claim.state == "busy":
        raise Refusal(409, "idempotency_in_progress", "A request with this Idempotency-Key is in progress; retry "
                      "shortly", {"Retry-After": "1"})
    if claim.state == "done":
        response = JsonResponse(claim.body, status=claim.status)
        response["Idempotent-Replayed"] = "true"
        return response
    try:
        results = await publish_all(messages, claim.results)
    except Refusal as refusal:
        try:
            await records.stopped(key, claim, fp, refusal.extra.get("results", []))
        except Exception as error:
            if not is_unreachable(error):
                raise
        raise
    response = answer(results, batch)
    try:
        await records.finish(key, claim, fp, response.status_code, json.loads(response.content))
    except Exception as error:
        if not is_unreachable(error):
            raise
        # Published, but the answer is not kept: a retry after the lease publishes again (at least once).
        logger.warning("Published, but the Idempotency-Key's answer could not be kept: %s", error)
    return response


async def publish_all(messages: list[tuple[str, Any]], done: list[Any]) -> list[dict[str, Any]]:
    """Publish, in order, what ``done`` (results of an earlier try) does not already hold."""
    results = list(done)
    for name, data in messages[len(results):]:
        try:
            _, message_id = await channel_for(name).publish_with_id(data, on_commit=False)
        except BrokerUnavailable:
            raise _unavailable("Redis is unreachable; the messages in results were published, the others not",
                               results=results) from None
        results.append({"channel": name, "id": message_id})
    return results


def _unavailable(detail: str, **extra: Any) -> Refusal:
    return Refusal(503, "broker_unavailable", detail, {"Retry-After": str(RETRY_AFTER)}, **extra)


def answer(results: list[dict[str, Any]], batch: bool) -> JsonResponse:
    return JsonResponse({"results": results} if batch else results[0])


@csrf_exempt  # authenticated by an API key in a header, never by a cookie: there is no CSRF to fear
async def publish_view(request: HttpRequest) -> JsonResponse:
    """``POST {"channel": ..., "data": ...}``: publish one message."""
    try:
        return await handle(request, batch=False)
    except Refusal as refusal:
        return refusal.response()


@csrf_exempt
async def batch_publish_view(request: HttpRequest) -> JsonResponse:
    """``POST {"messages": [...]}``: publish several messages, in order."""
    try:
        return await handle(request, batch=True)
    except Refusal as refusal:
        return refusal.response()


urlpatterns = [
    path("publish", publish_view, name="realtime-publish"),
    path("publish/batch", batch_publish_view, name="realtime-publish-batch"),
]
