"""A bare ASGI app for tests/test_servers_contract.py: reports what a server adapter finds on a live connection.

``/<adapter>`` (``daphne`` or ``uvicorn``): a WebSocket is accepted and sent one JSON report; an HTTP
request gets a streaming response, a first chunk, then the report. The report holds the names the
adapter reads on that connection and it lacks (``missing``), and the writer the delivery path would get.

``/<adapter>/inbound``: a WebSocket whose InboundMeter (realtime.inbound) the adapter charges, reported
in two steps as the client sends (tests/test_servers_contract.py drives it).
"""

from __future__ import annotations

import asyncio
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


async def until(predicate, seconds: float = 5.0) -> bool:
    """Whether ``predicate()`` came true within ``seconds`` (checked every 10 ms)."""
    for _ in range(int(seconds * 100)):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


async def inbound(name: str, receive, send) -> None:
    """1. The client sends half of a 2,000-byte message: it is in the server's parse buffers.
    2. It sends the rest, then a 1 MiB message. The first is charged, and reading stops (a limit of 1,000
    bytes); the view takes it from the server (uvicorn then reads again on its own) but does not give it
    back: at most one more read arrives. Given back, reading resumes and the 1 MiB message is charged."""
    from realtime.inbound import InboundMeter
    from realtime.security import ByteBudget

    servers.install()  # uvicorn in the test process: the patches go in now
    adapter = next(adapter for adapter in servers.ADAPTERS if adapter.name == name)
    await receive()
    meter = InboundMeter("contract", lambda reason: None, ByteBudget())
    meter.limit = 1000
    attached = servers.meter_inbound(send, meter)
    await send({"type": "websocket.accept"})
    arriving = await until(lambda: meter.parsing > 0)
    first = {"attached": attached, "missing": adapter.missing(send), "arriving": arriving, "parsing": meter.parsing}
    await send({"type": "websocket.send", "text": json.dumps(first)})
    charged = await until(lambda: meter.queued >= 2000)
    paused = meter.paused
    await receive()  # the 2,000 bytes, not given back yet
    await asyncio.sleep(0.3)
    read_while_paused = meter.held - 2000
    meter.taken()
    resumed = not meter.paused
    second = await until(lambda: meter.queued >= 1 << 20)
    report = {"charged": charged, "paused": paused, "read_while_paused": read_while_paused, "resumed": resumed,
              "second_charged": second}
    await send({"type": "websocket.send", "text": json.dumps(report)})
    await receive()
    meter.taken()
    await send({"type": "websocket.close", "code": 1000})
    meter.release()


async def application(scope, receive, send):
    name = scope["path"].strip("/")
    if scope["type"] == "websocket" and name.endswith("/inbound"):
        await inbound(name.split("/")[0], receive, send)
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
