"""Access tokens for test users, in one call, signed by simplejwt with the project's settings."""

from __future__ import annotations

from datetime import timedelta
from typing import Any


def token_for(user: Any, *, lifetime: timedelta | None = None, **claims: Any) -> str:
    """A signed access token for ``user``; ``lifetime`` overrides its expiry (negative: already expired)."""
    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken.for_user(user)
    if lifetime is not None:
        token.set_exp(lifetime=lifetime)
    for name, value in claims.items():
        token[name] = value
    return str(token)
