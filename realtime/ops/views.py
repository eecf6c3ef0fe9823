"""The operator's views: Prometheus metrics behind a permission, and the admin's live Realtime page.

- :class:`MetricsView`: the Prometheus text of this process, for users its ``permission_classes``
  allow (staff by default: :class:`realtime.IsAdmin`), by JWT or by admin session. Mounted by the
  admin at ``/admin/realtime/metrics``; mount it anywhere else with ``MetricsView.as_view()``.
- :func:`realtime_page`: the admin page; it opens :class:`FleetEvents`, an :class:`realtime.SSEView`
  (staff only) that sends the deployment's snapshots every ``OPS_SNAPSHOT_INTERVAL`` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.views import View

from ..auth import AuthenticationFailed, TokenAuthenticator
from ..conf import setting
from ..permissions import IsAdmin, first_denial, get_permissions, is_authenticated
from ..sse import SSEView
from . import fleet, prometheus


class MetricsView(View):
    """``GET``: Prometheus metrics of the process that answers (401 without credentials, 403 if denied)."""

    permission_classes: ClassVar[list[Any]] = [IsAdmin]
    authenticator_class: ClassVar[type[TokenAuthenticator]] = TokenAuthenticator
    http_method_names = ["get"]

    async def get(self, request: HttpRequest) -> HttpResponse:
        try:
            user = await SSEView.authenticate(self, request)  # JWT first, then the session
        except AuthenticationFailed as error:
            return HttpResponse(f"{error.code}: {error.detail}\n", status=401, content_type="text/plain")
        if user is not None:
            request.user = user
        denied = await first_denial(get_permissions(self.permission_classes), request, self)
        if denied is not None:
            status = 403 if is_authenticated(getattr(request, "user", None)) else 401
            return HttpResponse(f"{denied.message}\n", status=status, content_type="text/plain")
        if not prometheus.available():
            return HttpResponse("prometheus_client is not installed: pip install "
                                "'django-realtime-endpoints[metrics]'\n", status=501, content_type="text/plain")
        return HttpResponse(prometheus.exposition(), content_type=prometheus.CONTENT_TYPE)


class FleetEvents(SSEView):
    """The admin page's feed: ``event: fleet`` with every process's snapshot, now and every few seconds."""

    permission_classes: ClassVar[list[Any]] = [IsAdmin]
    ping_interval = 0

    async def stream(self, request: HttpRequest, **params: Any) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield {"event": "fleet", "data": await fleet.read()}
            await asyncio.sleep(float(setting("OPS_SNAPSHOT_INTERVAL")))


def realtime_page(request: HttpRequest) -> TemplateResponse:
    """The admin's Realtime page (wrapped in ``admin_view``: staff only)."""
    from django.contrib import admin
    from django.urls import reverse

    context = {
        **admin.site.each_context(request),
        "title": "Realtime",
        "events_url": reverse("admin:realtime-events"),
        "metrics_url": reverse("admin:realtime-metrics"),
    }
    return TemplateResponse(request, "admin/realtime/status.html", context)
