"""Settings, read lazily from ``settings.REALTIME`` on every use (nothing frozen at import time).

```python
REALTIME = {
    "ALLOWED_ORIGINS": None,          # more origins beside the request's own and CSRF_TRUSTED_ORIGINS; ["*"]: any
    "ALLOW_MISSING_ORIGIN": True,     # non-browser clients send no Origin; browsers always do
    "MESSAGE_RATE": "100/s",          # default per-connection inbound rate; None disables
    "MAX_MESSAGE_SIZE": 1048576,      # bytes (characters for text frames); over it: close 1009
    "MAX_CONNECTIONS_PER_USER": 50,   # WebSockets per authenticated user, per process; None: no cap
    "MAX_CONNECTIONS_PER_IP": 200,    # WebSockets per client address, per process; None: no cap
    "TRUSTED_PROXIES": ["127.0.0.1", "::1"],  # peers whose X-Forwarded-For is believed (realtime.proxies)
    "MAX_SSE_STREAMS_PER_USER": 20,   # concurrent SSE streams per authenticated user, per process
    "EXPIRE_WITH_TOKEN": True,        # close 4003 token_expired / end the stream when the token expires
    "RELEASE_MEMORY": True,           # malloc_trim after most connections have gone (realtime.memory)
    "STRICT_TOKENS": False,           # False: refused tokens close 4003 + reason; True: 4001/401 everywhere
    "SEND_BUFFER_SIZE": 65536,        # bytes owed to a client before sends wait (daphne; uvicorn: its own 64 KiB)
    "SLOW_CONSUMER_TIMEOUT": 10,      # seconds a send may wait before the client is a slow consumer (4008)
    "SEND_BUFFER_LIMIT": 4194304,     # bytes owed beyond which a client is a slow consumer at once (daphne)
    "MAX_PENDING_MESSAGES": 64,       # unread inbound messages before the socket is no longer read (daphne)
    "MAX_INBOUND_BYTES": 1048576,     # inbound bytes held for one WebSocket, unread by its view; over it: not read
    "MAX_INBOUND_BYTES_PER_IP": 16777216,  # the same, shared by one client address's WebSockets, per process
    "METRICS_MAX_CHANNELS": 100,      # channels with a label of their own; the rest fold into "prefix:*" or "other"
    "METRICS_PORT": None,             # a plain /metrics on 127.0.0.1:PORT for a scraper (one port per process)
    "METRICS_LATENCY_SAMPLE": 16,     # one WebSocket in N has its publish-to-send latency measured; 0: none
    "OPS_SNAPSHOT_INTERVAL": 3,       # seconds between this process's snapshots in Redis (admin page, realtime_status)
    "OPS_KEY_PREFIX": "realtime:ops", # Redis key prefix of those snapshots
    "MAX_SUBSCRIPTIONS": 100,         # channels per TopicSocket connection
    "PRESENCE_TIMEOUT": 30,           # seconds after which a silent process's presence members leave (Redis)
    "DIRECT_WRITES": True,            # relays write ready-made frames to the server's transport; False: ASGI only
    "FORWARD_STREAMS": True,          # a stream() proven to only forward a channel is served as its relay
    "SHUTDOWN_RETRY_AFTER": 5,        # seconds in the Retry-After of the 503 a shutting-down server answers
    "PUBLISH_ON_COMMIT": True,        # a publish in transaction.atomic() waits for the commit (realtime.pubsub.commit)
    "PUBLISH_API_RATE": "100/s",      # HTTP publish API requests per API key, per process (realtime.publish_api)
    "PUBLISH_API_MAX_BODY": 1048576,  # bytes of one HTTP publish request; over it: 413
    "PUBLISH_API_MAX_BATCH": 100,     # messages in one batch publish; over it: 413
    "IDEMPOTENCY_TTL": 86400,         # seconds an Idempotency-Key's answer is kept (Redis; no REDIS_URL: in process)
    "LIFECYCLE_GRACE": 5,             # seconds a user/channel gone may come back before user_offline/channel_vacated
    "LIFECYCLE_CLAIM_AFTER": 30,      # seconds a lifecycle event may stay unacked before another process takes it
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
    "TRUSTED_PROXIES": ("127.0.0.1", "::1"),
    "MAX_SSE_STREAMS_PER_USER": 20,
    "EXPIRE_WITH_TOKEN": True,
    "RELEASE_MEMORY": True,
    "STRICT_TOKENS": False,
    "SEND_BUFFER_SIZE": 64 * 1024,
    "SLOW_CONSUMER_TIMEOUT": 10,
    "SEND_BUFFER_LIMIT": 4 * 1024 * 1024,
    "MAX_PENDING_MESSAGES": 64,
    "MAX_INBOUND_BYTES": 1024 * 1024,
    "MAX_INBOUND_BYTES_PER_IP": 16 * 1024 * 1024,
    "METRICS_MAX_CHANNELS": 100,
    "METRICS_PORT": None,
    "METRICS_LATENCY_SAMPLE": 16,
    "OPS_SNAPSHOT_INTERVAL": 3,
    "OPS_KEY_PREFIX": "realtime:ops",
    "MAX_SUBSCRIPTIONS": 100,
    "PRESENCE_TIMEOUT": 30,
    "DIRECT_WRITES": True,
    "FORWARD_STREAMS": True,
    "SHUTDOWN_RETRY_AFTER": 5,
    "PUBLISH_ON_COMMIT": True,
    "PUBLISH_API_RATE": "100/s",
    "PUBLISH_API_MAX_BODY": 1024 * 1024,
    "PUBLISH_API_MAX_BATCH": 100,
    "IDEMPOTENCY_TTL": 86400,
    "LIFECYCLE_GRACE": 5,
    "LIFECYCLE_CLAIM_AFTER": 30,
}


def setting(name: str) -> Any:
    """The project's value for ``name`` in ``settings.REALTIME``, else the default."""
    from django.conf import settings

    if name not in DEFAULTS:
        raise KeyError(f"Unknown realtime setting {name!r}; known: {sorted(DEFAULTS)}")
    return getattr(settings, "REALTIME", {}).get(name, DEFAULTS[name])
