"""Probes of the wire tests' servers (the ``wire`` fixture of tests/conftest.py)."""

from __future__ import annotations

import json
import socket

import websockets


async def report(server) -> dict:
    async with websockets.connect(f"{server.ws_url}/api/w/report") as ws:
        return json.loads(await ws.recv())


def rss_mib(server) -> float:
    with open(f"/proc/{server.process.pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def never_reading_sse(port: int, path: str = "fanout-events") -> socket.socket:
    """An SSE client with a tiny receive buffer that never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /api/w/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
    return sock
