"""python manage.py realtime_routes [--json]: every WebSocket and SSE endpoint the project serves.

The routes come from the ``CoreApp`` named by ``settings.ASGI_APPLICATION`` (what daphne serves),
or, without one, from every installed app's ``routing.router``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.module_loading import import_string

from realtime.permissions import describe
from realtime.routing import AutoRouter, Route, Router

_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")

WEBSOCKET_OPTIONS = ("encoding", "subprotocol", "keepalive", "max_message_size", "throttle_classes")
SSE_OPTIONS = ("ping_interval", "headers")
#: Left out of the table (not of ``--json``), with None (a ``settings.REALTIME`` default) and ``{}``.
DEFAULT_AUTHENTICATOR = "realtime.auth.TokenAuthenticator"
#: Options whose values are classes: the table shows their names without the module.
CLASS_OPTIONS = ("authenticator", "throttle_classes")


def dotted(obj: Any) -> str:
    """``package.module.QualName`` of a class or function."""
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{name}" if module else name


def _top_level(description: str) -> str:
    """Composite permissions lose the outer parentheses they need only inside another one."""
    return description[1:-1] if description.startswith("(") and description.endswith(")") else description


def _option(value: Any) -> Any:
    if isinstance(value, type):
        return dotted(value)
    if isinstance(value, list | tuple):
        return [_option(item) for item in value]
    return value


def describe_route(route: Route) -> dict[str, Any]:
    """One route as plain data: path, protocol, view, permissions, options, tags."""
    view = route.view
    is_class = isinstance(view, type)
    names = WEBSOCKET_OPTIONS if route.kind == "websocket" else SSE_OPTIONS
    options = {name: _option(getattr(view, name)) for name in names if is_class and hasattr(view, name)}
    if is_class and hasattr(view, "authenticator_class"):
        options["authenticator"] = dotted(view.authenticator_class)
    if route.kind == "websocket" and is_class and hasattr(view, "stream"):
        from realtime.websocket import WebSocketView

        options["push"] = getattr(view, "stream", None) is not getattr(WebSocketView, "stream", None)
    permissions = list(getattr(view, "permission_classes", None) or [])
    return {
        "protocol": route.kind,
        "path": route.path,
        "params": {name: converter or "str" for converter, name in _PARAM.findall(route.django_path())},
        "view": dotted(view),
        "name": route.name,
        "permissions": [_top_level(describe(p)) for p in permissions] or ["AllowAny"],
        "options": options,
        "tags": list(route.tags),
    }


def find_routers() -> list[Router]:
    """The routers of the project's ``CoreApp`` (``ASGI_APPLICATION``), else every app's ``routing.router``."""
    dotted_app = getattr(settings, "ASGI_APPLICATION", None)
    if dotted_app:
        try:
            app = import_string(dotted_app)
        except ImportError as error:
            raise CommandError(f"Cannot import ASGI_APPLICATION {dotted_app!r}: {error}") from error
        for _ in range(10):  # unwrap ASGI middleware around the CoreApp
            routers = getattr(app, "routers", None)
            if routers is not None:
                return list(routers)
            app = next((getattr(app, name) for name in ("app", "inner", "application") if hasattr(app, name)), None)
            if app is None:
                break
    discovered = AutoRouter()
    discovered.autodiscover()
    return [discovered]


class Command(BaseCommand):
    help = "List every WebSocket and SSE endpoint: path, view, permissions, options and tags."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print a JSON list instead of a table.")
        parser.add_argument("--tag", action="append", default=[], help="Only routes with this tag (repeatable).")

    def handle(self, *args: Any, **options: Any) -> None:
        routes = [describe_route(route) for router in find_routers() for route in router.routes]
        if options["tag"]:
            wanted = set(options["tag"])
            routes = [route for route in routes if wanted & set(route["tags"])]
        routes.sort(key=lambda route: (route["path"], route["protocol"]))
        if options["json"]:
            self.stdout.write(json.dumps(routes, indent=2))
            return
        if not routes:
            self.stdout.write("No WebSocket or SSE endpoints are declared.")
            return
        self.stdout.write(self.table(routes))

    @staticmethod
    def table(routes: list[dict[str, Any]]) -> str:
        """Aligned columns, one endpoint a line, as ``show_urls`` prints them."""
        header = ("PROTOCOL", "PATH", "VIEW", "PERMISSIONS", "TAGS", "OPTIONS")
        rows = [header]
        for route in routes:
            options = " ".join(
                "push" if name == "push" else f"{name}={_short(value, name in CLASS_OPTIONS)}"
                for name, value in route["options"].items()
                if not (value is None or value is False or value == {} or value == DEFAULT_AUTHENTICATOR)
            )
            rows.append((
                "ws" if route["protocol"] == "websocket" else "sse",
                route["path"],
                route["view"],
                ", ".join(route["permissions"]),
                ", ".join(route["tags"]) or "-",
                options or "-",
            ))
        widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
        return "\n".join(
            "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip()
            for row in rows
        )


def _short(value: Any, classes: bool = False) -> str:
    """An option value in the table; dotted class names cut to their last part when ``classes``."""
    if isinstance(value, list):
        return "[" + ",".join(_short(item, classes) for item in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    if classes and isinstance(value, str):
        return value.rsplit(".", 1)[-1]
    return str(value)
