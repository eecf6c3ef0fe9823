"""A bare ASGI app for tests/test_servers_contract.py: reports what a server adapter finds on a live connection.

``/<adapter>`` (``daphne`` or ``uvicorn``): a WebSocket is accepted and sent one JSON report; an HTTP
request gets a streaming response, a first chunk, then the report. ``/deny``: a WebSocket handshake is
answered 503 with ``Retry-After`` through ``realtime.connection.deny_handshake`` (the way the router
and the shutdown refuse), or closed before accept where the server does not offer the extension.
The report holds the names the adapter reads on that connection and it lacks (``missing``), and the
writer the delivery path would get.
"""

from __future__ import annotations

import json
import os

import django
from django.apps import apps

if not apps.ready:  # a daphne process: realtime's ready() installs the adapters' patches
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()

from realtime import servers


def probe(name: str, send, kind: str) -> bytes:
    adapter = next(adapter for adapter in servers.ADAPTERS if adapter.name == name)
    writer = servers.websocket_writer(send) if kind == "websocket" else servers.response_writer(send)
    return json.dumps({
        "missing": adapter.missing(send),
        "writer": type(writer).__name__ if writer is not None else None,
        "ready": writer.ready() if writer is not None else None,
        "versions": adapter.versions(),
    }).encode()


async def application(scope, receive, send):
    name = scope["path"].strip("/")
    if scope["type"] == "websocket" and name == "deny":
        from realtime.connection import deny_handshake

        await receive()
        if not await deny_handshake(scope, send, 503, b"going away", {"Retry-After": "7"}):
            await send({"type": "websocket.close", "code": 1000})
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": probe(name, send, "websocket").decode()})
        await send({"type": "websocket.close", "code": 1000})
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b": open\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": probe(name, send, "http"), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
