"""Long-lived responses give back the worker thread Django gave their request.

Django's ASGI handler runs every request inside an asgiref ``ThreadSensitiveContext``: the
request's synchronous parts (the ``request_started`` receivers, sync middleware, thread-sensitive
``sync_to_async`` calls) share a one-thread executor created for that request, which lives until
the response has been sent. For a short request that is harmless. For an event stream that stays
open for hours it is one idle OS thread per open stream (1,000 SSE clients: 1,000 threads), plus
any database connection the request opened in that thread.

An SSE stream calls ``release_request_thread()`` once its headers are on their way, and runs the
user's generator with ``shared_thread_context()``: thread-sensitive calls made while streaming go
to asgiref's process-wide thread, as they do in Channels consumers.
"""

from __future__ import annotations

import contextvars

from asgiref.sync import SyncToAsync


def release_request_thread() -> bool:
    """Close the request thread's database connections in it, then let the thread end.

    Returns whether there was a thread to release. A ``ThreadSensitiveContext`` that was given its
    own executor is left alone: its owner shuts it down. Anything thread-sensitive the request
    still runs afterwards (Django's ``request_finished``) gets a fresh, short-lived thread.
    """
    context = SyncToAsync.thread_sensitive_context.get(None)
    if context is None or getattr(context, "_executor", None) is not None:
        return False
    executor = SyncToAsync.context_to_thread_executor.pop(context, None)
    if executor is None:
        return False
    from django.db import connections

    executor.submit(connections.close_all)  # in that thread: Django's connections are per thread
    executor.shutdown(wait=False)  # the thread ends once the close has run
    return True


def shared_thread_context() -> contextvars.Context:
    """A copy of the current context whose thread-sensitive calls use the process-wide thread."""
    context = contextvars.copy_context()
    context.run(SyncToAsync.thread_sensitive_context.set, None)
    return context
