"""The HTTP publish API in the AsyncAPI document: its two POST operations, their messages and errors.

Added by :func:`realtime.asyncapi.build_document` when the project's URLconf includes
``realtime.publish_api`` (its URL names reverse); the addresses are where the project put them.
"""

from __future__ import annotations

from typing import Any

_DATA = {"description": "Any JSON value: what subscribers of the channel receive"}
_CHANNEL = {"type": "string", "minLength": 1, "maxLength": 200, "description": "The channel's name"}
_ONE = {"type": "object", "required": ["channel", "data"], "additionalProperties": False,
        "properties": {"channel": _CHANNEL, "data": _DATA}}
_RESULT = {"type": "object", "required": ["channel", "id"], "properties": {
    "channel": _CHANNEL,
    "id": {"type": ["string", "null"], "description": "The message's history id (null: the channel keeps no history)"},
}}
_ERROR = {"type": "object", "required": ["detail", "code"], "properties": {
    "detail": {"type": "string"}, "code": {"type": "string"},
    "channels": {"type": "array", "items": {"type": "string"}, "description": "403: the channels refused"},
    "results": {"type": "array", "items": _RESULT, "description": "503: what was published before the outage"},
}}
ERRORS = {
    400: "invalid_json, invalid_request, invalid_idempotency_key",
    401: "not_authenticated, invalid_key",
    403: "channel_not_allowed: nothing published",
    405: "method_not_allowed",
    409: "idempotency_in_progress: retry shortly",
    413: "too_large, too_many_messages",
    415: "unsupported_media_type: send application/json",
    422: "idempotency_key_reused: the key named a different request",
    429: "rate_limited: see Retry-After",
    503: "broker_unavailable: see Retry-After; results lists what went out",
}
API_KEY_SCHEME = {
    "type": "http", "scheme": "bearer", "bearerFormat": "rtk_ API key",
    "description": "An API key made in the Django admin (Real-time > API keys), scoped to channel patterns.",
}
_HEADERS = {"type": "object", "properties": {
    "Idempotency-Key": {"type": "string", "minLength": 1, "maxLength": 255,
                        "description": "A retry with the same key publishes once and gets the same answer"},
}}


def _address(name: str) -> str | None:
    from django.urls import NoReverseMatch, reverse

    try:
        return reverse(name)
    except NoReverseMatch:
        return None


def add_publish_api(document: dict[str, Any]) -> None:
    """Describe the publish API in ``document`` (an AsyncAPI 3.0 dict) if the project serves it."""
    endpoints = [(name, _address(name), batch) for name, batch in
                 (("realtime-publish", False), ("realtime-publish-batch", True))]
    endpoints = [(name, address, batch) for name, address, batch in endpoints if address]
    if not endpoints:
        return
    document["components"]["securitySchemes"]["publishApiKey"] = API_KEY_SCHEME
    errors = "; ".join(f"{status}: {codes}" for status, codes in ERRORS.items())
    for _, address, batch in endpoints:
        ident = "publish_batch" if batch else "publish"
        request = ({"type": "object", "required": ["messages"], "additionalProperties": False,
                    "properties": {"messages": {"type": "array", "minItems": 1, "items": _ONE}}} if batch else _ONE)
        answer = {"type": "object", "required": ["results"],
                  "properties": {"results": {"type": "array", "items": _RESULT}}} if batch else _RESULT
        example = {"channel": "market-notices", "data": {"text": "Markets close early today"}}
        document["channels"][ident] = {
            "address": address,
            "title": "HTTP publish API" + (" (batch)" if batch else ""),
            "servers": [{"$ref": "#/servers/http"}],
            "description": f"POST with Content-Type: application/json. Errors are JSON {{detail, code}}: {errors}.",
            "messages": {
                "request": {"name": f"{ident}Request", "contentType": "application/json", "payload": request,
                            "headers": _HEADERS,
                            "examples": [{"payload": {"messages": [example]} if batch else example}]},
                "answer": {"name": f"{ident}Answer", "contentType": "application/json", "payload": answer},
                "error": {"name": f"{ident}Error", "contentType": "application/json", "payload": _ERROR},
            },
        }
        document["operations"][ident] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{ident}"},
            "summary": "Publish several messages, in order" if batch else "Publish one message to a channel",
            "security": [{"$ref": "#/components/securitySchemes/publishApiKey"}],
            "bindings": {"http": {"method": "POST"}},
            "messages": [{"$ref": f"#/channels/{ident}/messages/request"}],
            "reply": {"channel": {"$ref": f"#/channels/{ident}"},
                      "messages": [{"$ref": f"#/channels/{ident}/messages/answer"},
                                   {"$ref": f"#/channels/{ident}/messages/error"}]},
        }
