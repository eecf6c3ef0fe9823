"""What a route must be, checked when it is registered rather than when a client arrives.

Django's resolver takes any text as a path: ``"/e/:id"``, ``"/e/{room"`` or ``"/e/{id: int}"`` are
literal paths that no client ever sends, and ``{room}/{room}`` fails only at the first request. A
view of the wrong kind (an ``SSEView`` given to ``register_websocket``) or a hook written as a plain
``def`` fails with a ``TypeError`` when a client connects. :func:`check_path` and
:func:`check_view` refuse all of these in ``Router.register_websocket`` / ``register_sse``, naming
the route and the fix: ``ImproperlyConfigured`` for a path, ``TypeError`` for a view.

Unknown converters (``{id:integer}``) are left to Django, whose ``path()`` refuses them when the
router's URL patterns are built (start-up), since a project may register its converter later.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.core.exceptions import ImproperlyConfigured

_BRACES = re.compile(r"\{(\w+)(?::(\w+))?\}")
_ANGLES = re.compile(r"<(?:(\w+):)?(\w+)>")

#: Hooks the server awaits: a plain ``def`` fails at the first connection or message.
_WEBSOCKET_COROUTINES = ("on_connect", "on_receive", "on_disconnect", "_handle")
_SSE_COROUTINES = ("authenticate",)
#: Hooks called in the publisher's turn: an ``async def`` would hand back a coroutine, never run.
_PLAIN = ("relay_message", "relay_gap")


def check_path(path: str, route: str) -> None:
    """Refuse a path no request can match: ``:id``, a malformed ``{...}`` or ``<...>``, a parameter twice."""
    names: list[str] = []
    for segment in path.split("/"):
        if segment.startswith(":"):
            raise ImproperlyConfigured(
                f"{route}: {segment!r} is not a parameter in realtime's paths (it would match only the text "
                f"{segment!r}); write {{{segment[1:]}}}, or {{{segment[1:]}:int}} for a number."
            )
        names += [match[1] for match in _BRACES.finditer(segment)]
        rest = _BRACES.sub("", segment)
        names += [match[2] for match in _ANGLES.finditer(rest)]
        if any(char in _ANGLES.sub("", rest) for char in "{}<>"):
            unspaced = re.sub(r"\s+", "", segment)
            fix = f"write {unspaced!r} (no spaces)" if unspaced != segment and _is_parameter(unspaced) else (
                "write {name} or {name:int}, or Django's <int:name>"
            )
            raise ImproperlyConfigured(
                f"{route}: {segment!r} is not a parameter (it would match only that text); {fix}."
            )
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ImproperlyConfigured(
            f"{route}: the parameter {twice[0]!r} appears twice; give each parameter its own name."
        )


def check_view(kind: str, view: Any, route: str) -> None:
    """Refuse a view of the other protocol, or one whose hooks the server would call the wrong way."""
    if not callable(view):
        wanted = "a WebSocketView subclass" if kind == "websocket" else "an SSEView subclass or a view function"
        raise TypeError(f"{route}: needs {wanted}, got {view!r}")
    if not isinstance(view, type):
        if kind == "websocket" and not _takes(view, 3):
            raise TypeError(
                f"{route}: {_label(view)} is not an ASGI application (scope, receive, send); a Django view "
                "goes to register_sse(), a WebSocket endpoint is a WebSocketView subclass."
            )
        if kind == "sse" and hasattr(view, "consumer_class"):  # what as_asgi() returns
            raise TypeError(f"{route}: {_label(view)} is a WebSocket endpoint: register it with register_websocket().")
        return
    if kind == "websocket" and not hasattr(view, "as_asgi"):
        other = " (an SSE or Django view: register it with register_sse())" if hasattr(view, "as_view") else ""
        raise TypeError(f"{route}: {_label(view)} is not a WebSocketView{other}.")
    if kind == "sse" and not hasattr(view, "as_view"):
        other = " (a WebSocket endpoint: register it with register_websocket())" if hasattr(view, "as_asgi") else ""
        raise TypeError(f"{route}: {_label(view)} is not an SSEView or a Django view{other}.")
    from .sse import SSEView
    from .websocket import WebSocketView

    if issubclass(view, WebSocketView):
        _check_hooks(view, route, _WEBSOCKET_COROUTINES, "ws")
    elif issubclass(view, SSEView):
        _check_hooks(view, route, _SSE_COROUTINES, "request")


def _check_hooks(view: type, route: str, coroutines: tuple[str, ...], first: str) -> None:
    for name in coroutines:
        hook = getattr(view, name, None)
        if hook is not None and not iscoroutinefunction(hook):
            raise TypeError(
                f"{route}: {_label(view)}.{name} is a plain def, and the server awaits it: "
                f"write 'async def {name}(self, ...)'."
            )
    for name in _PLAIN:
        hook = getattr(view, name, None)
        if hook is not None and (iscoroutinefunction(hook) or inspect.isasyncgenfunction(hook)):
            raise TypeError(
                f"{route}: {_label(view)}.{name} is called in the publisher's turn and must return at once: "
                f"write 'def {name}(self, message)', not 'async def'."
            )
    stream = getattr(view, "stream", None)
    if stream is None:
        return
    if inspect.isgeneratorfunction(stream) or (iscoroutinefunction(stream) and not inspect.isasyncgenfunction(stream)):
        wrong = "a sync generator" if inspect.isgeneratorfunction(stream) else "an async def that never yields"
        raise TypeError(
            f"{route}: {_label(view)}.stream is {wrong}; write it as an async generator: "
            f"'async def stream(self, {first}, **params): ... yield item'."
        )


def _is_parameter(segment: str) -> bool:
    return not any(char in _ANGLES.sub("", _BRACES.sub("", segment)) for char in "{}<>")


def _takes(function: Any, count: int) -> bool:
    """Whether ``function`` accepts ``count`` positional arguments (True when its signature is unknown)."""
    try:
        signature = inspect.signature(function, follow_wrapped=False)
    except (TypeError, ValueError):
        return True
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


def _label(view: Any) -> str:
    return getattr(view, "__qualname__", None) or type(view).__qualname__
