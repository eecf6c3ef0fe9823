"""SSEClient: an SSE endpoint streamed in-process, by path, through the project's application.

Channels' ``HttpCommunicator`` reads a response whole, which an endless event stream never is; this
client sits on its parent, ``ApplicationCommunicator``, and parses the body chunk by chunk as it
arrives, the way ``EventSource`` does. The request goes through Django's whole middleware stack.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import unquote, urlparse

from channels.testing import ApplicationCommunicator

from .application import on_test_thread, project_application, quiet_connections
from .client import DEFAULT_TIMEOUT, InProcessClient
from .events import Event, EventStreamParser

_ANY: Any = object()


class SSEClient(InProcessClient):
    """One in-process request to an SSE endpoint; ``connect()``, then ``receive`` events."""

    kind = "SSEClient"

    def __init__(
        self,
        path: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        last_event_id: str | None = None,
        token_in_query: bool = False,
        app: Any = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        options = {"token": token, "headers": headers, "last_event_id": last_event_id, "token_in_query": token_in_query}
        super().__init__(path, options, app, timeout)
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.parser = EventStreamParser()
        self.ended = False
        self._events: list[Event] = []

    # -- connecting ---------------------------------------------------------------------------

    async def connect(self, token: str | None = None, **options: Any) -> SSEClient:
        """Send the GET and wait for the status line and headers; returns the client.

        A refusal (401, 403, 429...) is not an error here: check it with ``assert_status`` and read
        its ``event: error`` with ``receive``.
        """
        settings, path, headers = self._settings(token, options, {"Accept": "text/event-stream"})
        if settings["last_event_id"] is not None:
            headers["Last-Event-ID"] = settings["last_event_id"]
        parsed = urlparse(path)
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": unquote(parsed.path), "raw_path": parsed.path.encode("latin-1"), "root_path": "",
            "query_string": parsed.query.encode("latin-1"),
            "headers": [(b"host", b"testserver")]
            + [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()],
            "client": ["127.0.0.1", 50000], "server": ["testserver", 80],
        }
        app = on_test_thread(self.app if self.app is not None else project_application())
        self.communicator = ApplicationCommunicator(app, scope)
        quiet_connections.enter()
        self._open = True
        await self.communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await self._output(None, "the response to start")
        if start["type"] != "http.response.start":
            raise AssertionError(f"Expected http.response.start, got {start!r}")
        self.status = start["status"]
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start.get("headers", [])}
        return self

    # -- assertions ---------------------------------------------------------------------------

    def assert_status(self, status: int) -> None:
        """Check the response's status code."""
        if self.status != status:
            raise AssertionError(f"Expected status {status} from {self.path!r}, got {self.status}")

    async def receive(self, timeout: float | None = None) -> Event:
        """The next event (comments such as ``: ping`` are skipped, and kept in ``parser.comments``)."""
        while not self._events:
            if self.ended:
                raise AssertionError(f"Expected an event from {self.path!r}, but the stream ended")
            await self._read(timeout)
        return self._events.pop(0)

    async def assert_event(
        self, event: str | None = None, data: Any = _ANY, id: Any = _ANY, timeout: float | None = None  # noqa: A002
    ) -> Event:
        """Receive the next event and check its name, data and id; returns it.

        ``data`` is compared with the raw text when it is a str, else with the data decoded as JSON.
        """
        received = await self.receive(timeout)
        if event is not None and received.event != event:
            raise AssertionError(f"Expected event {event!r}, got {received.event!r} with data {received.data!r}")
        if data is not _ANY:
            actual = received.data if isinstance(data, str) else _json(received)
            if actual != data:
                raise AssertionError(f"Expected data {data!r} in event {received.event!r}, got {actual!r}")
        if id is not _ANY and received.id != id:
            raise AssertionError(f"Expected id {id!r} in event {received.event!r}, got {received.id!r}")
        return received

    async def assert_no_event(self, timeout: float = 0.2) -> None:
        """Fail if an event arrives within ``timeout`` seconds (comments and pings do not count)."""
        communicator = self._communicator()
        deadline = time.monotonic() + timeout
        while not self._events and not self.ended:
            left = deadline - time.monotonic()
            if left <= 0 or await communicator.receive_nothing(left):
                break
            await self._read(None)
        if self._events:
            raise AssertionError(f"Expected no event from {self.path!r}, got {self._events[0]!r}")

    async def assert_ended(self, timeout: float | None = None) -> None:
        """Wait for the server to end the response; fail if an event comes first."""
        while not self.ended:
            if self._events:
                break
            await self._read(timeout)
        if self._events:
            raise AssertionError(f"Expected the stream to end, got {self._events[0]!r}")

    # -- closing ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Disconnect as a client would, and wait for the view to finish (its generator's ``finally``)."""
        await self._disconnect({"type": "http.disconnect"})

    # -- internals ----------------------------------------------------------------------------

    async def _read(self, timeout: float | None) -> None:
        """Take one body chunk and parse it."""
        message = await self._output(timeout, "an event")
        if message["type"] != "http.response.body":
            raise AssertionError(f"Expected http.response.body, got {message!r}")
        self._events.extend(self.parser.feed(message.get("body", b"")))
        if not message.get("more_body", False):
            self.ended = True


def _json(event: Event) -> Any:
    try:
        return event.json()
    except json.JSONDecodeError:
        raise AssertionError(f"Event {event.event!r} has data that is not JSON: {event.data!r}") from None
