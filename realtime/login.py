"""Login throttles for the token endpoint, as DRF throttle classes: per username and per address.

``TokenObtainPairView.as_view(throttle_classes=LOGIN_THROTTLES)``. Over a rate DRF answers 429
with ``Retry-After``. Rates come from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` (scopes
``login_username`` and ``login_address``), read on each request, else the defaults below. Attempts
are counted in Django's default cache: a ``LocMemCache`` counts per process.

Where we differ from DRF's ``AnonRateThrottle``: the address is ``REMOTE_ADDR`` only, never a
client-sent ``X-Forwarded-For`` (DRF uses that header when ``NUM_PROXIES`` is unset, so a client
could pick its own address), and a cache that is away lets logins through with a warning instead
of answering 500.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger("realtime.login")


class LoginThrottle(SimpleRateThrottle):
    """A login throttle: a lazily read rate, and failing open when the cache is unavailable."""

    scope = ""
    default_rate = ""

    def get_rate(self) -> str | None:
        """``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][scope]``, read on each request, else the default."""
        from rest_framework.settings import api_settings

        return (api_settings.DEFAULT_THROTTLE_RATES or {}).get(self.scope, self.default_rate)

    def allow_request(self, request: Any, view: Any) -> bool:
        """DRF's sliding window; True (with a warning) when the cache cannot be reached."""
        try:
            return super().allow_request(request, view)
        except Exception:
            logger.warning("Login throttle %s skipped: its cache is unavailable", self.scope, exc_info=True)
            return True


class LoginUsernameThrottle(LoginThrottle):
    """Login attempts per username, from any address: scope ``login_username``, default ``10/min``."""

    scope = "login_username"
    default_rate = "10/min"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        """The username, case-folded and hashed; None (not counted here) when there is none."""
        from django.contrib.auth import get_user_model

        data = request.data if hasattr(request.data, "get") else {}
        username = data.get(get_user_model().USERNAME_FIELD)
        if not isinstance(username, str) or not username:
            return None
        ident = hashlib.sha256(username.casefold().encode()).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": ident}


class LoginAddressThrottle(LoginThrottle):
    """Login attempts per client address, for any username: scope ``login_address``, default ``30/min``."""

    scope = "login_address"
    default_rate = "30/min"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        """The connection's address as the server resolved it (daphne ``--proxy-headers`` behind nginx)."""
        address = request.META.get("REMOTE_ADDR")
        if not address:
            return None
        return self.cache_format % {"scope": self.scope, "ident": address}


LOGIN_THROTTLES = [LoginUsernameThrottle, LoginAddressThrottle]
