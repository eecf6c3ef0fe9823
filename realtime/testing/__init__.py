"""A test kit for realtime endpoints: in-process clients by path, channel captures, tokens.

```python
from realtime.testing import SSEClient, WebSocketClient, capture, publish, token_for
```

The clients drive the project's own ASGI application (``settings.ASGI_APPLICATION``) through
Channels' communicators, so routing, authentication and permissions run as behind daphne. A pytest
plugin (``realtime.testing.pytest_plugin``) adds fixtures that close what a test left open.
"""

from .application import connections_kept, project_application
from .capture import Capture, Published, capture, publish, wait_for_subscribers
from .events import Event, EventStreamParser
from .sse import SSEClient
from .tokens import token_for
from .websocket import HandshakeRefused, WebSocketClient

__all__ = [
    "Capture",
    "Event",
    "EventStreamParser",
    "HandshakeRefused",
    "Published",
    "SSEClient",
    "WebSocketClient",
    "capture",
    "connections_kept",
    "project_application",
    "publish",
    "token_for",
    "wait_for_subscribers",
]
