"""Django signals that end or re-check a user's open connections in every process (realtime.revocation).

- Saving a user with ``is_active = False`` revokes (``user_deactivated``).
- Any other save of an existing user re-checks its connections (``is_staff``, ``is_superuser`` or a
  field a custom permission reads may have changed), but for a save whose ``update_fields`` names
  none of the user's permission fields, such as the ``last_login`` of every login.
- Logging a session out (``user_logged_out``) closes the sockets and SSE streams that session
  authenticated (``realtime.sessions``).
- Adding, removing or clearing a user's groups or user permissions (``m2m_changed``, from either
  side: ``user.groups.remove(g)`` or ``group.user_set.remove(u)``) re-checks that user's connections.

A re-check is sent once the transaction commits (at once outside one), so the processes that run
the permissions read the new state. ``QuerySet.update()``, raw SQL and changes to other models send
no signal: call ``realtime.recheck(user)`` for them.
"""

from __future__ import annotations

from typing import Any

#: A save that writes only other fields (``update_fields``) re-checks nothing.
WATCHED_FIELDS = frozenset({"is_active", "is_staff", "is_superuser", "groups", "user_permissions"})


def user_saved(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
    if created:
        return
    if getattr(instance, "is_active", True) is False:
        from .revocation import revocations

        revocations.revoke_sync(instance.pk, "user_deactivated")
        return
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and not WATCHED_FIELDS & set(update_fields):
        return
    recheck_on_commit([instance.pk], "user_saved")


def memberships_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any = None, **kwargs: Any
) -> None:
    """``m2m_changed`` on ``User.groups`` or ``User.user_permissions``, from the user's side or the other's."""
    from django.contrib.auth import get_user_model

    if not reverse:  # instance is the user
        if action in ("post_add", "post_remove", "post_clear"):
            recheck_on_commit([instance.pk], "groups_changed")
        return
    if action in ("post_add", "post_remove"):
        recheck_on_commit(pk_set or (), "groups_changed")
    elif action == "pre_clear":  # the group's users, read before they are gone
        users = get_user_model()._default_manager.filter(**{f"{_field(sender)}": instance})
        recheck_on_commit(list(users.values_list("pk", flat=True)), "groups_changed")


def _field(through: Any) -> str:
    """``groups`` or ``user_permissions``: the user's field whose through model is ``through``."""
    from django.contrib.auth import get_user_model

    for name in ("groups", "user_permissions"):
        if getattr(get_user_model(), name).through is through:
            return name
    raise LookupError(f"{through!r} is not a through model of the user")


def recheck_on_commit(user_pks: Any, reason: str) -> None:
    """Re-check each user's connections once the current transaction commits (at once outside one)."""
    from django.db import transaction

    from .revocation import revocations

    for pk in list(user_pks):
        # robust: a re-check that cannot be sent is logged; the commit and the caller go on
        transaction.on_commit(lambda pk=pk: revocations.recheck_sync(pk, reason), robust=True)


def connect() -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.signals import user_logged_out
    from django.db.models.signals import m2m_changed, post_save

    from .sessions import session_logged_out

    user = get_user_model()
    post_save.connect(user_saved, sender=user, dispatch_uid="realtime.user_saved")
    user_logged_out.connect(session_logged_out, dispatch_uid="realtime.session_logged_out")
    for name in ("groups", "user_permissions"):
        field = getattr(user, name, None)
        if field is not None and hasattr(field, "through"):
            m2m_changed.connect(memberships_changed, sender=field.through, dispatch_uid=f"realtime.{name}_changed")
