"""The soak's peer: the same endpoints as ``bench/soak/app.py``, hand-written as a bare ASGI app.

No Django, no Channels, no ``realtime``: a set of WebSocket ``send`` callables and a set of SSE
``send`` callables, and a publisher that encodes each message once and awaits one send per client.
Run on the same daphne by ``bench/soak/run.py --app peer``, it tells how much of what the soak
measures (memory per connection, memory kept after everyone leaves) is daphne, Twisted and CPython
rather than ``realtime``.

    daphne -b 127.0.0.1 -p PORT bench.soak.peer_app:application
"""

import asyncio
import json
from urllib.parse import parse_qs

from bench.soak import publisher
from bench.soak.probes import process_stats

WEBSOCKETS: set = set()
STREAMS: set = set()
PING_INTERVAL = 15  # as the realtime app: WebSocketView.keepalive and SSEView.ping_interval


async def _publish_one(message: dict) -> int:
    """Encode once, then one awaited send per client; returns the number of clients sent to."""
    text = json.dumps(message, separators=(",", ":"))
    ws_event = {"type": "websocket.send", "text": text}
    sse_event = {"type": "http.response.body", "body": f"data: {text}\n\n".encode(), "more_body": True}
    sent = 0
    for clients, event in ((WEBSOCKETS, ws_event), (STREAMS, sse_event)):
        for send in list(clients):
            try:
                await send(event)
                sent += 1
            except (OSError, RuntimeError):  # the client went away mid-broadcast
                clients.discard(send)
    return sent


async def _json(send, body: dict) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


async def _sse(receive, send) -> None:
    headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b": connected\n\n", "more_body": True})
    STREAMS.add(send)
    try:
        while True:  # pings while the client stays; http.disconnect ends the stream
            try:
                async with asyncio.timeout(PING_INTERVAL):
                    if (await receive())["type"] == "http.disconnect":
                        return
            except TimeoutError:
                await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
    finally:
        STREAMS.discard(send)


async def _http(scope, receive, send) -> None:
    path, query = scope["path"], parse_qs(scope["query_string"].decode())
    flags = {key: values[-1] for key, values in query.items()}
    if path == "/sse":
        await _sse(receive, send)
    elif path == "/publish":
        publisher.start(int(flags.get("count", "1")), float(flags.get("rate", "0")), _publish_one)
        await _json(send, {"ok": True})
    elif path == "/stats":
        await _json(send, {
            **process_stats(flags),
            "ws_subscribers": len(WEBSOCKETS),
            "sse_streams": len(STREAMS),
            "channel_subscribers": len(WEBSOCKETS) + len(STREAMS),
            "dropped_live": 0,
            "queued_live": 0,
            "publisher": publisher.STATE,
        })
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def _websocket(scope, receive, send) -> None:
    if scope["path"] != "/ws":
        await send({"type": "websocket.close", "code": 4404})
        return
    ping = {"type": "websocket.send", "text": '{"type":"ping"}'}
    try:
        while True:
            try:
                async with asyncio.timeout(PING_INTERVAL):
                    event = await receive()
            except TimeoutError:
                await send(ping)
                continue
            if event["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
                WEBSOCKETS.add(send)
            elif event["type"] == "websocket.disconnect":
                return
    finally:
        WEBSOCKETS.discard(send)


async def application(scope, receive, send) -> None:
    if scope["type"] == "http":
        await _http(scope, receive, send)
    elif scope["type"] == "websocket":
        await _websocket(scope, receive, send)
