"""Real-time endpoints for Django: WebSocket and SSE views, pub/sub channels, JWT auth, permissions.

Names are imported lazily, so ``import realtime`` needs neither settings nor the app registry.
"""

from importlib import import_module
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "CoreApp": "app",
    "Router": "routing",
    "AutoRouter": "routing",
    "WebSocketView": "websocket",
    "_authenticate_ws": "websocket",
    "_check_ws_permissions": "websocket",
    "WebSocket": "connection",
    "WebSocketState": "connection",
    "WebSocketDisconnect": "connection",
    "CloseCode": "closecodes",
    "WebSocketException": "closecodes",
    "SSEView": "sse",
    "sse_response": "sse",
    "encode_event": "sse_encoder",
    "Channel": "pubsub",
    "Topic": "topics",
    "TopicSocket": "topics",
    "Refused": "topics",
    "Snapshot": "topics",
    "Gap": "pubsub",
    "UnencodableMessage": "encoding",
    "BrokerUnavailable": "pubsub",
    "Permission": "permissions",
    "AllowAny": "permissions",
    "IsAuthenticated": "permissions",
    "IsAdmin": "permissions",
    "HasRole": "permissions",
    "IsOwner": "permissions",
    "AuthenticationFailed": "auth",
    "SessionAuthenticator": "sessions",
    "revoke_user": "revocation",
    "arevoke_user": "revocation",
    "recheck": "revocation",
    "arecheck": "revocation",
}

__all__ = sorted(name for name in _EXPORTS if not name.startswith("_"))


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'realtime' has no attribute {name!r}")
    value = getattr(import_module(f"realtime.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, *globals()])
