"""What the in-process WebSocket and SSE clients share: options, the token, the communicator's life."""

from __future__ import annotations

from typing import Any

from .application import quiet_connections

DEFAULT_TIMEOUT = 5.0


class InProcessClient:
    """Base of WebSocketClient and SSEClient: one connection to ``path`` through the project's app."""

    #: Shown in errors: the subclass's name.
    kind = "client"

    def __init__(self, path: str, options: dict[str, Any], app: Any, timeout: float) -> None:
        self.path = path
        self.options = options
        self.app = app
        self.timeout = timeout
        self.communicator: Any = None
        self._open = False

    def _settings(self, token: str | None, options: dict[str, Any], headers: dict[str, str]) -> tuple[
        dict[str, Any], str, dict[str, str]
    ]:
        """The options of one ``connect()``, its path and headers with the token where it goes."""
        if self.communicator is not None:
            raise RuntimeError(f"This client has already connected; make a new {self.kind} to reconnect")
        settings = {**self.options, **options}
        if token is not None:
            settings["token"] = token
        unknown = set(settings) - set(self.options)
        if unknown:
            raise TypeError(f"connect() got unknown options {sorted(unknown)}; known: {sorted(self.options)}")
        path, headers = self.path, {**headers, **(settings["headers"] or {})}
        if settings["token"] is not None:
            if settings["token_in_query"]:
                path += ("&" if "?" in path else "?") + f"token={settings['token']}"
            else:
                headers["Authorization"] = f"Bearer {settings['token']}"
        return settings, path, headers

    async def __aenter__(self) -> Any:
        if self.communicator is None:
            await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self, token: str | None = None, **options: Any) -> Any:
        raise NotImplementedError

    async def _disconnect(self, message: dict[str, Any]) -> None:
        """Send the client's departure, and wait for the view to finish."""
        if not self._open:
            return
        self._open = False
        try:
            communicator = self._communicator()
            if communicator.future.cancelled():  # a receive timed out, and the communicator cancelled it
                return
            await communicator.send_input(message)
            await communicator.wait(self.timeout)
        finally:
            quiet_connections.exit()

    def _communicator(self) -> Any:
        if self.communicator is None:
            raise RuntimeError(f"Call 'await client.connect()' first (or use 'async with {self.kind}(...)')")
        return self.communicator

    async def _output(self, timeout: float | None, expected: str) -> dict[str, Any]:
        wait = self.timeout if timeout is None else timeout
        try:
            return await self._communicator().receive_output(wait)
        except TimeoutError:
            raise AssertionError(f"Expected {expected} from {self.path!r} within {wait} s, got nothing") from None
