"""The ASGI application the test clients drive, and the database care it needs inside tests.

Clients talk to the project's own application (``settings.ASGI_APPLICATION``, normally
:class:`realtime.CoreApp`), so routing, authentication, permissions and Django's middleware all run.

Two things differ from a real server, on purpose, and only while a test client is open:

- Django's ``close_old_connections`` is kept off the request signals and off Channels'
  ``database_sync_to_async``, as Django's test client and Channels' communicators do: it would close
  the test's connection in the middle of its transaction.
- Under ``async_to_sync`` (how Django's ``TestCase`` runs ``async def`` test methods) every
  thread-sensitive call of the application runs on the test's own thread, *including* those of
  Django's HTTP handler, which would otherwise give each request a thread of its own. So a view that
  queries the database sees the rows the test created inside its transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Iterator
from typing import Any
from unittest import mock

from asgiref.sync import AsyncToSync, ThreadSensitiveContext

_EXECUTOR_CONTEXTS = "executor" in inspect.signature(ThreadSensitiveContext).parameters


def project_application() -> Any:
    """The project's ASGI application, imported from ``settings.ASGI_APPLICATION``."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.utils.module_loading import import_string

    dotted = getattr(settings, "ASGI_APPLICATION", None)
    if not dotted:
        raise ImproperlyConfigured(
            "realtime.testing drives settings.ASGI_APPLICATION (e.g. ASGI_APPLICATION = "
            "'project.asgi.application'); set it, or pass app=CoreApp(routers=[...]) to the client"
        )
    return import_string(dotted)


def _no_op() -> None:
    pass


class _Quiet:
    """Reference-counted: ``close_old_connections`` is off while any test client is open."""

    def __init__(self) -> None:
        self.depth = 0
        self.patch: Any = None

    def enter(self) -> None:
        if self.depth == 0:
            from django.core.signals import request_finished, request_started
            from django.db import close_old_connections

            request_started.disconnect(close_old_connections)
            request_finished.disconnect(close_old_connections)
            self.patch = mock.patch("channels.db.close_old_connections", _no_op)
            self.patch.start()
        self.depth += 1

    def exit(self) -> None:
        self.depth -= 1
        if self.depth == 0:
            from django.core.signals import request_finished, request_started
            from django.db import close_old_connections

            self.patch.stop()
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)


quiet_connections = _Quiet()


@contextlib.contextmanager
def connections_kept() -> Iterator[None]:
    """Keep ``close_old_connections`` away from the test's database connection meanwhile."""
    quiet_connections.enter()
    try:
        yield
    finally:
        quiet_connections.exit()


def on_test_thread(app: Any) -> Any:
    """``app`` wrapped so that, under ``async_to_sync``, its thread-sensitive calls run on the test's thread."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        executor = AsyncToSync.loop_thread_executors.get(asyncio.get_running_loop())
        if executor is None or not _EXECUTOR_CONTEXTS:
            await app(scope, receive, send)
            return
        async with ThreadSensitiveContext(executor=executor):
            await app(scope, receive, send)

    return wrapped
