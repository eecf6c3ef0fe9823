"""The Django admin's user list shows each user's roles (auth groups), which HasRole checks."""

from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

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


if admin.site.is_registered(User) and isinstance(admin.site._registry[User], UserAdmin):
    admin.site.unregister(User)
    admin.site.register(User, RealtimeUserAdmin)
