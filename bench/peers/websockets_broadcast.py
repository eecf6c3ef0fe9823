"""The ``websockets`` library's own server with ``websockets.broadcast()``: Python's ceiling.

``/publish`` and ``/stats`` are answered from the ``process_request`` hook.

    python -m bench.peers.websockets_broadcast --port PORT
"""

import argparse
import asyncio
import json
from http import HTTPStatus
from urllib.parse import urlsplit

from websockets.asyncio.server import broadcast, serve

from bench.peers._common import encode, publish_loop, publish_params, spawn

CLIENTS: set = set()


async def _publish_one(message: dict) -> None:
    broadcast(CLIENTS, encode(message))


async def handler(connection) -> None:
    CLIENTS.add(connection)
    try:
        await connection.wait_closed()
    finally:
        CLIENTS.discard(connection)


def process_request(connection, request):
    url = urlsplit(request.path)
    if url.path == "/ws":
        return None  # proceed with the WebSocket handshake
    if url.path == "/publish":
        spawn(publish_loop(*publish_params(url.query), _publish_one))
        return connection.respond(HTTPStatus.OK, '{"ok": true}\n')
    if url.path == "/stats":
        return connection.respond(HTTPStatus.OK, json.dumps({"subscribers": len(CLIENTS)}) + "\n")
    return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")


async def main(port: int) -> None:
    async with serve(
        handler,
        "127.0.0.1",
        port,
        process_request=process_request,
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
