"""The Django admin: each user's roles (auth groups, which HasRole checks), the publish API's keys."""

from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from .models import ApiKey
from .models.apikey import KEY_PREFIX

User = get_user_model()


class RealtimeUserAdmin(UserAdmin):
    """The stock UserAdmin plus a Roles column and filter; roles are edited on the user's page."""

    list_display = (*UserAdmin.list_display, "roles")
    # The stock list already filters by groups on current Django; add the filter only where it does not.
    list_filter = UserAdmin.list_filter if "groups" in UserAdmin.list_filter else (*UserAdmin.list_filter, "groups")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        """Users with their groups prefetched, one query for the whole Roles column."""
        return super().get_queryset(request).prefetch_related("groups")

    @admin.display(description="Roles")
    def roles(self, user: Any) -> str:
        """The user's roles; a superuser holds every role, as HasRole decides."""
        if getattr(user, "is_superuser", False):
            return "all (superuser)"
        return ", ".join(sorted(group.name for group in user.groups.all())) or "—"


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """API keys of the HTTP publish API. A new key's secret is shown once, on the page after it is added.

    Only its SHA-256 is stored; a lost key is replaced by a new one (delete or deactivate the old).
    The secret is rendered in that one response, never put in a message (messages may be stored in
    the session, that is in the database).
    """

    list_display = ("name", "key_prefix", "scopes", "is_active", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name", "prefix", "channels")
    readonly_fields = ("key_prefix", "created_at")
    fields = ("name", "channels", "is_active", "key_prefix", "created_at")

    @admin.display(description="Key")
    def key_prefix(self, key: ApiKey) -> str:
        return f"{KEY_PREFIX}{key.prefix}_…" if key.prefix else "(made when saved)"

    @admin.display(description="Channels")
    def scopes(self, key: ApiKey) -> str:
        return ", ".join(key.patterns)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if not change:
            request.realtime_new_key = obj.set_new_key()
        super().save_model(request, obj, form, change)

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> Any:
        key = getattr(request, "realtime_new_key", None)
        if key is None:
            return super().response_add(request, obj, post_url_continue)
        context = {**self.admin_site.each_context(request), "title": "API key created", "api_key": obj,
                   "secret": key, "opts": self.model._meta}
        response = TemplateResponse(request, "admin/realtime/apikey_created.html", context)
        response["Cache-Control"] = "no-store"
        return response


if admin.site.is_registered(User) and isinstance(admin.site._registry[User], UserAdmin):
    admin.site.unregister(User)
    admin.site.register(User, RealtimeUserAdmin)


def _install_realtime_page(site: admin.AdminSite) -> None:
    """Add the live Realtime page (``/admin/realtime/``) to ``site``'s URLs and index, once."""
    if getattr(site, "_realtime_page", False):
        return
    from django.urls import path, reverse

    from .ops.views import FleetEvents, MetricsView, realtime_page

    get_urls, get_app_list = site.get_urls, site.get_app_list

    def urls() -> list[Any]:
        return [
            path("realtime/", site.admin_view(realtime_page), name="realtime"),
            path("realtime/events", FleetEvents.as_view(), name="realtime-events"),  # SSEView checks IsAdmin
            path("realtime/metrics", MetricsView.as_view(), name="realtime-metrics"),
            *get_urls(),
        ]

    def app_list(request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        apps = get_app_list(request, app_label)
        if app_label in (None, "realtime") and request.user.is_active and request.user.is_staff:
            url = reverse("admin:realtime", current_app=site.name)
            apps.append({
                "name": "Real-time", "app_label": "realtime", "app_url": url, "has_module_perms": True,
                "models": [{"name": "Realtime", "object_name": "Realtime", "admin_url": url, "view_only": True,
                            "perms": {"view": True}}],
            })
        return apps

    site.get_urls = urls
    site.get_app_list = app_list
    site._realtime_page = True


_install_realtime_page(admin.site)
