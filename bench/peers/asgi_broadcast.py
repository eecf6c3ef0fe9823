"""Hand-written in-process broadcast as a bare ASGI app: the ASGI server's ceiling.

A set of ``send`` callables; publishing loops over it and awaits each send.

    daphne -b 127.0.0.1 -p PORT bench.peers.asgi_broadcast:application
    uvicorn --host 127.0.0.1 --port PORT bench.peers.asgi_broadcast:application
"""

import json

from bench.peers._common import encode, publish_loop, publish_params, spawn

CLIENTS: set = set()


async def _publish_one(message: dict) -> None:
    event = {"type": "websocket.send", "text": encode(message)}
    for send in list(CLIENTS):
        try:
            await send(event)
        except (OSError, RuntimeError):  # client went away mid-broadcast
            CLIENTS.discard(send)


async def _http(scope, receive, send) -> None:
    path = scope["path"]
    if path == "/publish":
        spawn(publish_loop(*publish_params(scope["query_string"]), _publish_one))
        status, body = 200, b'{"ok": true}'
    elif path == "/stats":
        status, body = 200, json.dumps({"subscribers": len(CLIENTS)}).encode()
    else:
        status, body = 404, b'{"error": "not found"}'
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _websocket(scope, receive, send) -> None:
    if scope["path"] != "/ws":
        await send({"type": "websocket.close", "code": 4404})
        return
    try:
        while True:
            event = await receive()
            kind = event["type"]
            if kind == "websocket.connect":
                await send({"type": "websocket.accept"})
                CLIENTS.add(send)
            elif kind == "websocket.disconnect":
                break
    finally:
        CLIENTS.discard(send)


async def application(scope, receive, send) -> None:
    if scope["type"] == "http":
        await _http(scope, receive, send)
    elif scope["type"] == "websocket":
        await _websocket(scope, receive, send)
    elif scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
