"""Deactivating a user closes that user's connections in every process; logging a session out, its sockets."""

from __future__ import annotations

from typing import Any


def user_saved(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
    if not created and getattr(instance, "is_active", True) is False:
        from .revocation import revocations

        revocations.revoke_sync(instance.pk, "user_deactivated")


def connect() -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.signals import user_logged_out
    from django.db.models.signals import post_save

    from .sessions import session_logged_out

    post_save.connect(user_saved, sender=get_user_model(), dispatch_uid="realtime.user_saved")
    user_logged_out.connect(session_logged_out, dispatch_uid="realtime.session_logged_out")
