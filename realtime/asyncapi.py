"""An AsyncAPI 3.0 document of the routers' endpoints, served by a view and written by a command.

Every WebSocket and SSE route becomes a channel with its address and path parameters, and
operations from the server's side: ``receive`` is what a client sends (``on_receive``), ``send`` is
what the server pushes. Protected endpoints carry the JWT security schemes (``Authorization: Bearer``
or ``?token=``; SSE also the session cookie). A view may declare examples::

    class EchoWS(WebSocketView):
        message_examples = {"receive": [{"text": "hi"}], "send": [{"echo": {"text": "hi"}}]}

    class Prices(SSEView):
        message_examples = {"send": [{"event": "price", "data": {"symbol": "R_100", "bid": 1.5}}]}

Payload schemas are inferred from those examples (types and keys only). The project's document also
describes the HTTP publish API (:mod:`realtime.publish_spec`) when its ``urls.py`` includes it. Serve the document with
``path("api/asyncapi.json", asyncapi_view)``; ``manage.py realtime_asyncapi`` prints or writes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views import View

from .publish_spec import add_publish_api
from .routing import AutoRouter, Route, Router, to_django_path

ASYNCAPI_VERSION = "3.0.0"
_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_CONTENT_TYPES = {"json": "application/json", "text": "text/plain", "bytes": "application/octet-stream"}
_CONVERTERS = {
    "str": ("A path segment (no slash)", None),
    "int": ("A non-negative integer", "1"),
    "slug": ("Letters, digits, hyphens and underscores", "my-slug"),
    "uuid": ("A UUID", "075194d3-6885-417e-a8a8-6c931e272f00"),
    "path": ("Any text, slashes included", "a/b"),
}
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "bearer": {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "An access token from the token endpoint, in `Authorization: Bearer <token>`.",
    },
    "queryToken": {
        "type": "httpApiKey", "name": "token", "in": "query",
        "description": "The same access token as `?token=`, for clients that cannot set headers "
        "(the browser WebSocket, EventSource).",
    },
}


def project_routers() -> list[Router]:
    """The routers of ``settings.ASGI_APPLICATION`` (a CoreApp), else every app's ``routing.router``."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    dotted = getattr(settings, "ASGI_APPLICATION", None)
    routers = getattr(import_string(dotted), "routers", None) if dotted else None
    if routers:
        return list(routers)
    router = AutoRouter()
    router.autodiscover()
    return [router]


def build_document(
    routers: Iterable[Router] | None = None,
    *,
    title: str = "Real-time API",
    version: str = "1.0.0",
    description: str | None = None,
    host: str = "localhost:8000",
    secure: bool = False,
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document, as a dict ready for ``json.dumps``."""
    routes = [route for router in (project_routers() if routers is None else routers) for route in router.routes]
    info: dict[str, Any] = {"title": title, "version": version}
    if description:
        info["description"] = description
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": info,
        "defaultContentType": "application/json",
        "servers": {
            "websocket": {"host": host, "protocol": "wss" if secure else "ws",
                          "description": "WebSocket endpoints"},
            "http": {"host": host, "protocol": "https" if secure else "http",
                     "description": "Server-Sent Events endpoints (text/event-stream)"},
        },
        "channels": {},
        "operations": {},
        "components": {"securitySchemes": _security_schemes()},
    }
    taken: set[str] = set()
    for route in routes:
        address = _address(route.path)[0].strip("/")
        channel_id = _unique(_ident(f"{'ws' if route.kind == 'websocket' else 'sse'}_{address}"), taken)
        channel, operations = _describe(route, channel_id)
        document["channels"][channel_id] = channel
        document["operations"].update(operations)
    if routers is None:  # the project's document: its HTTP publish API too, where urls.py includes it
        add_publish_api(document)
    return document


def _security_schemes() -> dict[str, Any]:
    from django.conf import settings

    return {
        **SECURITY_SCHEMES,
        "session": {
            "type": "httpApiKey", "name": settings.SESSION_COOKIE_NAME, "in": "cookie",
            "description": "A Django session of a logged-in user (SSE endpoints, and WebSocket views with "
                           "SessionAuthenticator: from an Origin trusted by name only).",
        },
    }


def _reads_sessions(view: Any) -> bool:
    """A WebSocket view whose authenticator takes the session cookie (``realtime.sessions``)."""
    from .sessions import SessionAuthenticator

    authenticator = getattr(view, "authenticator_class", None)
    return isinstance(authenticator, type) and issubclass(authenticator, SessionAuthenticator)


def _describe(route: Route, channel_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    view = route.view
    address, parameters = _address(route.path)
    protected, permissions = _permissions(view)
    channel: dict[str, Any] = {"address": address, "title": _view_name(view)}
    summary = _summary(view)
    if summary:
        channel["summary"] = summary
    notes = [f"Permissions: {permissions}." if permissions else "Public."]
    if route.kind == "websocket":
        notes.append("A denied connection is accepted, then closed with 4003 (4001: credentials refused).")
        channel["servers"] = [{"$ref": "#/servers/websocket"}]
        sent, received = _websocket_messages(view, protected)
    else:
        notes.append("A denial answers 401 or 403 with one `error` event.")
        channel["servers"] = [{"$ref": "#/servers/http"}]
        sent, received = _sse_messages(view), {}
    channel["description"] = " ".join(notes)
    if parameters:
        channel["parameters"] = parameters
    channel["messages"] = {**received, **sent}
    if route.tags:
        channel["tags"] = [{"name": tag} for tag in route.tags]
    security = [{"$ref": f"#/components/securitySchemes/{name}"} for name in ("bearer", "queryToken")]
    if route.kind == "sse" or _reads_sessions(view):
        security.append({"$ref": "#/components/securitySchemes/session"})
    operations = {}
    for action, messages in (("send", sent), ("receive", received)):
        if not messages:
            continue
        operation: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": ("What the server pushes" if action == "send" else "What a client sends")
            + f" on {address}",
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{key}"} for key in messages],
        }
        if protected:
            operation["security"] = security
        if route.tags:
            operation["tags"] = [{"name": tag} for tag in route.tags]
        operations[f"{channel_id}_{action}"] = operation
    return channel, operations


def _websocket_messages(view: Any, protected: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    encoding = getattr(view, "encoding", "json")
    content_type = _CONTENT_TYPES.get(encoding, "application/json")
    examples = _examples(view)
    fallback = {"json": {}, "text": {"type": "string"}, "bytes": {"type": "string", "format": "binary"}}
    received = {"clientMessage": _message("clientMessage", content_type, examples.get("receive"),
                                          fallback.get(encoding, {}), "A message from the client")}
    sent = {"serverMessage": _message("serverMessage", content_type, examples.get("send"),
                                      fallback.get(encoding, {}), "A message from the server")}
    if encoding == "json" and protected:
        refresh = getattr(view, "refresh_message_type", "realtime.refresh")
        received["refresh"] = _message(
            "refresh", content_type, [{"type": refresh, "token": "<a fresh access token>"}], None,
            "Swaps the connection's token for a fresh one of the same user, so it is not closed at expiry",
        )
        sent["refreshed"] = _message("refreshed", content_type, [{"type": refresh, "ok": True, "exp": 1767225600}],
                                     None, "The answer to a refresh")
    keepalive = getattr(view, "keepalive", 0)
    beat = {"json": {"type": "ping"}, "text": "ping"}.get(encoding)  # daphne drops an empty binary frame
    if keepalive and keepalive > 0 and beat is not None:
        sent["heartbeat"] = _message("heartbeat", content_type, [beat], fallback.get(encoding, {}),
                                     f"Sent every {keepalive:g} s; ignore it")
    return sent, received


def _sse_messages(view: Any) -> dict[str, Any]:
    events: dict[str, list[Any]] = {}
    for example in _examples(view).get("send") or []:
        if not isinstance(example, dict) or "data" not in example:
            raise ValueError(f"{_view_name(view)}.message_examples['send'] holds SSE events like "
                             f"{{'event': 'update', 'data': {{...}}}}, not {example!r}")
        events.setdefault(example.get("event") or "message", []).append(example["data"])
    messages = {
        _ident(name): _message(name, _sse_content_type(data), data, None, f"An `{name}` event")
        for name, data in events.items()
    }
    if not messages:
        messages["message"] = _message("message", "application/json", None, {}, "An event")
    messages.setdefault("error", _message(
        "error", "application/json", [{"code": "token_expired", "detail": "Reconnect with a fresh token"}], None,
        "Ends the stream: a refusal, an expired token, revoked sessions, or a failing stream",
    ))
    return messages


def _message(name: str, content_type: str, examples: list[Any] | None, schema: Any, summary: str) -> dict[str, Any]:
    message: dict[str, Any] = {"name": name, "summary": summary, "contentType": content_type}
    if examples:
        message["payload"] = _infer(examples[0]) if schema is None or schema == {} else schema
        message["examples"] = [{"payload": example} for example in examples]
    else:
        message["payload"] = schema if schema is not None else {}
    return message


def _sse_content_type(data: list[Any]) -> str:
    return "text/plain" if all(isinstance(item, str) for item in data) else "application/json"


def _infer(value: Any) -> dict[str, Any]:
    """A JSON Schema of an example's shape: types and keys, nothing more."""
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, (list, tuple)):
        return {"type": "array", "items": _infer(value[0])} if value else {"type": "array"}
    if isinstance(value, dict):
        return {"type": "object", "properties": {str(k): _infer(v) for k, v in value.items()}}
    return {}


def _examples(view: Any) -> dict[str, list[Any]]:
    declared = getattr(view, "message_examples", None) or {}
    if not isinstance(declared, dict) or set(declared) - {"send", "receive"}:
        raise ValueError(f"{_view_name(view)}.message_examples must be a dict with 'send' and/or 'receive' lists")
    return {key: list(value) for key, value in declared.items()}


def _address(path: str) -> tuple[str, dict[str, Any]]:
    django_path = to_django_path(path)
    parameters: dict[str, Any] = {}
    for converter, name in _PARAM.findall(django_path):
        description, example = _CONVERTERS.get(converter or "str", (f"A `{converter}` path segment", None))
        parameter: dict[str, Any] = {"description": description}
        if example is not None:
            parameter["examples"] = [example]
        parameters[name] = parameter
    return "/" + _PARAM.sub(lambda m: "{" + m[2] + "}", django_path), parameters


def _permissions(view: Any) -> tuple[bool, str]:
    from .permissions import AllowAny, describe

    classes = list(getattr(view, "permission_classes", None) or [])
    described = [describe(p) for p in classes]
    protected = any(not (p is AllowAny or isinstance(p, AllowAny)) for p in classes)
    return protected, ", ".join(described)


def _view_name(view: Any) -> str:
    return getattr(view, "__qualname__", None) or type(view).__name__


def _summary(view: Any) -> str:
    doc = (getattr(view, "__doc__", None) or "").strip()  # a class's docstring is not inherited
    return doc.splitlines()[0] if doc else ""


def _ident(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("_") or "root"


def _unique(ident: str, taken: set[str]) -> str:
    candidate, number = ident, 2
    while candidate in taken:
        candidate, number = f"{ident}_{number}", number + 1
    taken.add(candidate)
    return candidate


class AsyncAPIView(View):
    """Serves the AsyncAPI document of the project's routers (or of ``routers``) as JSON."""

    routers: list[Router] | None = None
    title = "Real-time API"
    version = "1.0.0"
    description: str | None = None
    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest) -> JsonResponse:
        document = build_document(
            self.routers, title=self.title, version=self.version, description=self.description,
            host=request.get_host(), secure=request.is_secure(),
        )
        return JsonResponse(document, json_dumps_params={"indent": 2})


asyncapi_view = AsyncAPIView.as_view()
