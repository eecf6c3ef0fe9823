"""Deactivating a user closes that user's connections in every process."""

from __future__ import annotations

from typing import Any


def user_saved(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
    if not created and getattr(instance, "is_active", True) is False:
        from .revocation import revocations

        revocations.revoke_sync(instance.pk, "user_deactivated")


def connect() -> None:
    from django.contrib.auth import get_user_model
    from django.db.models.signals import post_save

    post_save.connect(user_saved, sender=get_user_model(), dispatch_uid="realtime.user_saved")
