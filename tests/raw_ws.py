"""A WebSocket client on a bare socket, for frames no well-behaved client library would send."""

from __future__ import annotations

import base64
import os
import socket
import struct


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    """One frame as a client sends it (masked unless told otherwise)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return frame(0x8, struct.pack("!H", code) + reason)


class RawClient:
    """Handshake over a plain socket; then ``send`` raw bytes and read frames back."""

    def __init__(
        self, port: int, path: str, *, rcvbuf: int | None = None, timeout: float = 10.0, source: str | None = None,
    ) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:  # small, so that a client that never reads stops the server's writes
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:  # another client address (tests.servers.require_untrusted_loopback)
            self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(head.decode(errors="replace"))

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the server")
        return data

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame; ConnectionError when the TCP connection ends."""
        while True:
            if len(self.buffer) >= 2:
                size = self.buffer[1] & 0x7F
                offset = 2
                if size == 126:
                    offset, size = 4, struct.unpack("!H", self.buffer[2:4])[0] if len(self.buffer) >= 4 else -1
                elif size == 127:
                    offset, size = 10, struct.unpack("!Q", self.buffer[2:10])[0] if len(self.buffer) >= 10 else -1
                if size >= 0 and len(self.buffer) >= offset + size:
                    opcode, payload = self.buffer[0] & 0x0F, self.buffer[offset:offset + size]
                    self.buffer = self.buffer[offset + size:]
                    return opcode, payload
            self.buffer += self._recv()

    def close_code(self) -> int:
        """Read until the server's close frame; its code. 1006 when the connection ends without one."""
        try:
            while True:
                opcode, payload = self.read_frame()
                if opcode == 0x8:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        except (ConnectionError, OSError):
            return 1006

    def close(self) -> None:
        self.sock.close()
