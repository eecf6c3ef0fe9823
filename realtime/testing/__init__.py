"""A test kit for realtime endpoints: in-process clients by path, channel captures, tokens.

```python
from realtime.testing import SSEClient, WebSocketClient, capture, publish, token_for
```

The clients drive the project's own ASGI application (``settings.ASGI_APPLICATION``) through
Channels' communicators, so routing, authentication and permissions run as behind daphne. A pytest
plugin (``realtime.testing.pytest_plugin``) adds fixtures that close what a test left open.

Names are imported lazily: the plugin, which the entry point loads in every pytest run of a
project that has realtime installed, imports nothing of the kit (nor of Channels) until it is used.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Capture": "capture",
    "Published": "capture",
    "capture": "capture",
    "publish": "capture",
    "wait_for_subscribers": "capture",
    "Event": "events",
    "EventStreamParser": "events",
    "SSEClient": "sse",
    "token_for": "tokens",
    "HandshakeRefused": "websocket",
    "WebSocketClient": "websocket",
    "connections_kept": "application",
    "project_application": "application",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'realtime.testing' has no attribute {name!r}")
    loaded = import_module(f"realtime.testing.{module}")
    # Bind every name of that module now: importing realtime.testing.capture binds the *module* to
    # ``realtime.testing.capture``, which would shadow the function of the same name for good.
    for export, home in _EXPORTS.items():
        if home == module:
            globals()[export] = getattr(loaded, export)
    return globals()[name]


def __dir__() -> list[str]:
    return sorted([*__all__, *globals()])
