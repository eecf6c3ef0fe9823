"""The Django admin's user list shows each user's roles (auth groups), which HasRole checks."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

User = get_user_model()


class RealtimeUserAdmin(UserAdmin):
    """The stock UserAdmin plus a Roles column and filter; roles are edited on the user's page."""

    list_display = (*UserAdmin.list_display, "roles")
    list_filter = (*UserAdmin.list_filter, "groups")

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("groups")

    @admin.display(description="Roles")
    def roles(self, user) -> str:
        return ", ".join(sorted(group.name for group in user.groups.all())) or "—"


if admin.site.is_registered(User) and isinstance(admin.site._registry[User], UserAdmin):
    admin.site.unregister(User)
    admin.site.register(User, RealtimeUserAdmin)
