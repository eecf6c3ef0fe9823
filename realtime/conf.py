"""Settings, read lazily from ``settings.REALTIME`` on every use (nothing frozen at import time).

```python
REALTIME = {
    "ALLOWED_ORIGINS": None,          # more origins beside the request's own and CSRF_TRUSTED_ORIGINS; ["*"]: any
    "ALLOW_MISSING_ORIGIN": True,     # non-browser clients send no Origin; browsers always do
    "MESSAGE_RATE": "100/s",          # default per-connection inbound rate; None disables
    "MAX_MESSAGE_SIZE": 1048576,      # bytes (characters for text frames); over it: close 1009
    "MAX_CONNECTIONS_PER_USER": 50,   # WebSockets per authenticated user, per process; None: no cap
    "MAX_CONNECTIONS_PER_IP": 200,    # WebSockets per client address, per process; None: no cap
    "MAX_SSE_STREAMS_PER_USER": 20,   # concurrent SSE streams per authenticated user, per process
    "EXPIRE_WITH_TOKEN": True,        # close 4001 / end the stream when the access token expires
    "RELEASE_MEMORY": True,           # malloc_trim after most connections have gone (realtime.memory)
}
```
"""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, Any] = {
    "ALLOWED_ORIGINS": None,
    "ALLOW_MISSING_ORIGIN": True,
    "MESSAGE_RATE": "100/s",
    "MAX_MESSAGE_SIZE": 1024 * 1024,
    "MAX_CONNECTIONS_PER_USER": 50,
    "MAX_CONNECTIONS_PER_IP": 200,
    "MAX_SSE_STREAMS_PER_USER": 20,
    "EXPIRE_WITH_TOKEN": True,
    "RELEASE_MEMORY": True,
}


def setting(name: str) -> Any:
    """The project's value for ``name`` in ``settings.REALTIME``, else the default."""
    from django.conf import settings

    if name not in DEFAULTS:
        raise KeyError(f"Unknown realtime setting {name!r}; known: {sorted(DEFAULTS)}")
    return getattr(settings, "REALTIME", {}).get(name, DEFAULTS[name])
