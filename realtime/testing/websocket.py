"""WebSocketClient: a WebSocket endpoint driven in-process, by path, through the project's application.

It is a thin layer over Channels' ``WebsocketCommunicator`` (``client.communicator``): the path is
resolved by the routers, the token is checked by the view's authenticator and its permissions run,
exactly as behind daphne. What it adds is what a test of an endpoint asserts: JSON frames by
default, a close code and reason recorded when the server closes, and failures that say what came
instead of what was expected.
"""

from __future__ import annotations

import json
import re
from typing import Any

from channels.testing import WebsocketCommunicator

from .application import on_test_thread, project_application, quiet_connections
from .client import DEFAULT_TIMEOUT, InProcessClient

#: How long a client waits for the server, in seconds, unless told otherwise.


class HandshakeRefused(AssertionError):
    """The server closed the connection before accepting it (no route, or a refusing consumer)."""

    def __init__(self, path: str, code: int) -> None:
        super().__init__(f"The WebSocket handshake at {path!r} was refused (close {code}): is a route declared there?")
        self.code = code


class WebSocketClient(InProcessClient):
    """One in-process WebSocket connection to ``path``; ``connect()``, then ``send`` and ``receive``."""

    kind = "WebSocketClient"

    def __init__(
        self,
        path: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        subprotocols: list[str] | None = None,
        token_in_query: bool = False,
        app: Any = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        options = {"token": token, "headers": headers, "subprotocols": subprotocols, "token_in_query": token_in_query}
        super().__init__(path, options, app, timeout)
        self.accepted = False
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None

    # -- connecting ---------------------------------------------------------------------------

    async def connect(self, token: str | None = None, **options: Any) -> WebSocketClient:
        """Open the connection (``Authorization: Bearer <token>`` when given); returns the client.

        Raises :class:`HandshakeRefused` if the server closes before accepting. A view that denies
        accepts first and then closes with its code: assert that with ``assert_closed(4003)``.
        """
        settings, path, headers = self._settings(token, options, {})
        header_list = [(b"host", b"testserver")] + [
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
        ]
        app = on_test_thread(self.app if self.app is not None else project_application())
        self.communicator = WebsocketCommunicator(app, path, header_list, settings["subprotocols"])
        # The application task has not run yet (it starts on the first await), so the scope can
        # still get what a server adds to it.
        self.communicator.scope.update(client=["127.0.0.1", 50000], server=["testserver", 80], scheme="ws")
        quiet_connections.enter()
        self._open = True
        accepted, detail = await self.communicator.connect(self.timeout)
        if not accepted:
            self.close_code, self.close_reason = detail, ""
            await self.close()
            raise HandshakeRefused(self.path, detail)
        self.accepted, self.subprotocol = True, detail
        return self

    # -- sending ------------------------------------------------------------------------------

    async def send(self, data: Any) -> None:
        """Send ``data`` as a JSON text frame."""
        await self.send_text(json.dumps(data))

    async def send_text(self, text: str) -> None:
        """Send a text frame."""
        await self._communicator().send_input({"type": "websocket.receive", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary frame."""
        await self._communicator().send_input({"type": "websocket.receive", "bytes": data})

    # -- receiving ----------------------------------------------------------------------------

    async def receive(self, timeout: float | None = None) -> Any:
        """The next frame, decoded from JSON."""
        text = await self.receive_text(timeout)
        try:
            return json.loads(text)
        except ValueError:
            raise AssertionError(f"Expected a JSON frame, got {text!r}") from None

    async def receive_text(self, timeout: float | None = None) -> str:
        """The next frame, which must be a text frame."""
        message = await self._next("a text frame", timeout)
        if message.get("text") is None:
            raise AssertionError(f"Expected a text frame, got a binary one: {message.get('bytes')!r}")
        return message["text"]

    async def receive_bytes(self, timeout: float | None = None) -> bytes:
        """The next frame, which must be a binary frame."""
        message = await self._next("a binary frame", timeout)
        if message.get("bytes") is None:
            raise AssertionError(f"Expected a binary frame, got a text one: {message.get('text')!r}")
        return message["bytes"]

    async def assert_no_message(self, timeout: float = 0.1) -> None:
        """Fail if the server sends anything (a frame or a close) within ``timeout`` seconds."""
        communicator = self._communicator()
        if not await communicator.receive_nothing(timeout):
            message = await communicator.receive_output(self.timeout)
            self._record(message)
            raise AssertionError(f"Expected nothing from the server, got {_describe(message)}")

    async def assert_closed(
        self, code: int | None = None, reason: str | re.Pattern[str] | None = None, timeout: float | None = None
    ) -> tuple[int, str]:
        """Wait for the server to close, then check its code (and its reason, exactly or by a regex).

        Fails if a frame arrives first. Returns ``(code, reason)``.
        """
        if self.close_code is None:
            communicator = self._communicator()
            message = await self._output(timeout, f"a close{'' if code is None else f' with {code}'}")
            if message["type"] != "websocket.close":
                raise AssertionError(f"Expected the server to close with {code}, got {_describe(message)}")
            self._record(message)
            await communicator.send_input({"type": "websocket.disconnect", "code": self.close_code})
        if code is not None and self.close_code != code:
            raise AssertionError(f"Expected close code {code}, got {self.close_code} ({self.close_reason!r})")
        if isinstance(reason, re.Pattern):
            if not reason.search(self.close_reason or ""):
                raise AssertionError(f"Close reason {self.close_reason!r} does not match {reason.pattern!r}")
        elif reason is not None and self.close_reason != reason:
            raise AssertionError(f"Expected close reason {reason!r}, got {self.close_reason!r}")
        return self.close_code, self.close_reason or ""

    # -- closing ------------------------------------------------------------------------------

    async def close(self, code: int = 1000) -> None:
        """Disconnect as a client would, and wait for the view to finish (its ``on_disconnect`` included)."""
        await self._disconnect({"type": "websocket.disconnect", "code": code})

    # -- internals ----------------------------------------------------------------------------

    async def _next(self, expected: str, timeout: float | None) -> dict[str, Any]:
        if self.close_code is not None:
            raise AssertionError(f"Expected {expected}, but the connection closed with {self.close_code}")
        message = await self._output(timeout, expected)
        self._record(message)
        if message["type"] != "websocket.send":
            raise AssertionError(f"Expected {expected}, got {_describe(message)}")
        return message

    def _record(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.close":
            self.close_code = message.get("code", 1000)
            self.close_reason = message.get("reason") or ""


def _describe(message: dict[str, Any]) -> str:
    if message["type"] == "websocket.close":
        return f"a close with {message.get('code', 1000)} ({message.get('reason') or ''!r})"
    if message["type"] == "websocket.send":
        return f"a frame {message.get('text', message.get('bytes'))!r}"
    return repr(message)
