"""picows on uvloop writing each frame to every client: the reference for the relay rows.

picows parses and frames WebSocket in C (Cython); the broadcast builds the message's JSON once
and calls ``transport.send`` for each client, so what is left per delivery is picows' framing and
the socket write. ``/publish`` and ``/stats`` are plain HTTP answers from the upgrade hook (a
non-101 response, which picows sends with ``Connection: close``).

    python -m bench.peers.picows_broadcast --port PORT
"""

import argparse
import json
from urllib.parse import urlsplit

import uvloop
from picows import WSListener, WSMsgType, WSUpgradeResponse, WSUpgradeResponseWithListener, ws_create_server

from bench.peers._common import encode, publish_loop, publish_params, spawn

CLIENTS: set = set()


class Client(WSListener):
    def on_ws_connected(self, transport) -> None:
        self.transport = transport
        CLIENTS.add(transport)

    def on_ws_disconnected(self, transport) -> None:
        CLIENTS.discard(transport)

    def on_ws_frame(self, transport, frame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


async def _publish_one(message: dict) -> None:
    payload = encode(message).encode()
    for transport in CLIENTS:
        transport.send(WSMsgType.TEXT, payload)


def route(request):
    url = urlsplit(request.path.decode("latin-1"))
    if url.path == "/ws":
        return Client()
    if url.path == "/publish":
        spawn(publish_loop(*publish_params(url.query), _publish_one))
        body = b'{"ok": true}\n'
    elif url.path == "/stats":
        body = json.dumps({"subscribers": len(CLIENTS)}).encode() + b"\n"
    else:
        return None  # 404
    response = WSUpgradeResponse.create_ok_response(body, {"Content-Type": "application/json"})
    return WSUpgradeResponseWithListener(response, None)


async def main(port: int) -> None:
    server = await ws_create_server(route, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(main(parser.parse_args().port))
