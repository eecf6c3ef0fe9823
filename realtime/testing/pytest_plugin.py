"""pytest fixtures for realtime endpoints (with pytest-django and pytest-asyncio).

Enabled by the ``pytest11`` entry point of the distribution, or by ``pytest_plugins =
["realtime.testing.pytest_plugin"]`` in a ``conftest.py``. Every client or capture a fixture hands
out is closed when the test ends, even when it fails.

Database access: an ``async def`` test runs the view's database calls on another thread than the
test's, with its own connection, which cannot see rows created inside the test's rolled-back
transaction. Mark such tests ``@pytest.mark.django_db(transaction=True)``; the fixtures warn when an
async test asks for the rolled-back kind.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

try:
    import pytest_asyncio
except ImportError:  # loaded by the entry point in every pytest run: never break one that lacks it
    pytest_asyncio = None

if TYPE_CHECKING:
    from .capture import Capture
    from .sse import SSEClient
    from .websocket import WebSocketClient


def _async_fixture(function: Any) -> Any:
    if pytest_asyncio is not None:
        return pytest_asyncio.fixture(function)

    @pytest.fixture(name=function.__name__)
    def missing() -> None:
        pytest.fail(f"The {function.__name__} fixture needs pytest-asyncio: pip install pytest-asyncio")

    return missing


class RealtimeTestWarning(UserWarning):
    """A test is set up in a way that will not see what it expects."""


def _check_database(request: pytest.FixtureRequest) -> None:
    if not inspect.iscoroutinefunction(getattr(request.node, "function", None)):
        return
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or "live_server" in request.fixturenames
    if marker is not None and not transactional and not marker.kwargs.get("transaction", False):
        warnings.warn(
            f"{request.node.name} is async and uses a rolled-back transaction: the view's database calls "
            "run on another connection and will not see the test's rows. Use "
            "@pytest.mark.django_db(transaction=True).",
            RealtimeTestWarning,
            stacklevel=2,
        )


async def _clients(client_class: type) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """A ``connect(path, **options)`` making connected clients of ``client_class``, closed at the end."""
    clients: list[Any] = []

    async def connect(path: str, **options: Any) -> Any:
        client_options = {k: options.pop(k) for k in ("app", "timeout") if k in options}
        client = client_class(path, **client_options)
        clients.append(client)
        return await client.connect(**options)

    yield connect
    for client in reversed(clients):
        await client.close()


@_async_fixture
async def realtime_websocket(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., Awaitable[WebSocketClient]]]:
    """``ws = await realtime_websocket("/api/chat/ws/lobby", token=...)``: a connected WebSocketClient."""
    from .websocket import WebSocketClient

    _check_database(request)
    async for connect in _clients(WebSocketClient):
        yield connect


@_async_fixture
async def realtime_sse(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Awaitable[SSEClient]]]:
    """``stream = await realtime_sse("/api/events/system", token=...)``: a connected SSEClient."""
    from .sse import SSEClient

    _check_database(request)
    async for connect in _clients(SSEClient):
        yield connect


@pytest.fixture
def realtime_capture() -> Iterator[Callable[..., Capture]]:
    """``published = realtime_capture(channel)``: a Capture, open until the test ends."""
    from .capture import Capture

    captures: list[Capture] = []

    def open_capture(channel: Any = None) -> Capture:
        recorder = Capture(channel).__enter__()
        captures.append(recorder)
        return recorder

    yield open_capture
    for recorder in reversed(captures):
        recorder.__exit__(None, None, None)


@pytest.fixture
def realtime_token() -> Callable[..., str]:
    """``realtime_token(user)``: :func:`realtime.testing.token_for` as a fixture."""
    from .tokens import token_for

    return token_for
