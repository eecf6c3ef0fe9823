"""Login throttles for the token endpoint, as DRF throttle classes: brute force is slowed, no one is locked out.

``TokenObtainPairView.as_view(throttle_classes=LOGIN_THROTTLES)``. Rates come from
``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``, read on each request, else the defaults below:

- ``login_username`` (**10/min**): attempts on one username **from one address**. Over it that
  address gets 429 with ``Retry-After``; the owner, from anywhere else, is still answered.
- ``login_username_global`` (**30/min**): attempts on one username from every address together.
  Over it the username is *under attack*: each address may try it **once per that period** (one
  minute), then 429 until its minute is over. It slows every guesser down and walls no one: an
  address that has not tried the username in the last minute is answered at once, so its owner,
  typing the right password, gets in.
- ``login_address`` (**30/min**): attempts from one address, whatever the username (one address
  spraying many usernames).

Why not one limit per username, as before: it counted attempts from any address, so nine wrong
passwords from anywhere kept the owner out (429) for a minute, again and again, for as long as
anyone cared to. An attacker's own address is what it cannot multiply cheaply, so walls are per
address; the per-username pressure only slows. The cost is bounded: one address gets 10 guesses a
minute on a username (1 while it is under attack), K addresses K guesses a minute. A known-device
exemption (a cookie from a past login) would let the global limit be a wall again, but the
token endpoint's clients (scripts, SPAs on another origin) need not keep cookies, and the owner on
a new device would be locked out; add MFA or a CAPTCHA in front when a botnet is in the threat model.

Attempts are counted in Django's default cache (a ``LocMemCache`` counts per process; the demo's
``RedisCache`` across processes). The address is ``REMOTE_ADDR``, resolved from trusted proxies
only (``realtime.proxies``), never DRF's guess from a client-sent ``X-Forwarded-For`` (it uses that
header when ``NUM_PROXIES`` is unset), and a cache that is away lets logins through with a warning
instead of answering 500. ``login_username: None`` turns both per-username limits off.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger("realtime.login")


def _rate(scope: str, default: str | None) -> str | None:
    from rest_framework.settings import api_settings

    return (api_settings.DEFAULT_THROTTLE_RATES or {}).get(scope, default)


class LoginThrottle(SimpleRateThrottle):
    """A login throttle: a lazily read rate, and failing open when the cache is unavailable."""

    scope = ""
    default_rate: str | None = ""

    def get_rate(self) -> str | None:
        """``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][scope]``, read on each request, else the default."""
        return _rate(self.scope, self.default_rate)

    def allow_request(self, request: Any, view: Any) -> bool:
        """:meth:`check`; True (with a warning) when the cache cannot be reached."""
        try:
            return self.check(request, view)
        except Exception:
            logger.warning("Login throttle %s skipped: its cache is unavailable", self.scope, exc_info=True)
            return True

    def check(self, request: Any, view: Any) -> bool:
        """DRF's sliding window."""
        return super().allow_request(request, view)


def _username(request: Any) -> str | None:
    from django.contrib.auth import get_user_model

    data = request.data if hasattr(request.data, "get") else {}
    username = data.get(get_user_model().USERNAME_FIELD)
    return username if isinstance(username, str) and username else None


class LoginUsernameThrottle(LoginThrottle):
    """Attempts on one username: ``login_username`` per address (10/min), and, once every address together
    is over ``login_username_global`` (30/min), one attempt per address per that period."""

    scope = "login_username"
    default_rate = "10/min"
    global_scope = "login_username_global"
    global_default_rate = "30/min"

    def check(self, request: Any, view: Any) -> bool:
        username, address = _username(request), request.META.get("REMOTE_ADDR")
        if self.rate is None or username is None or not address:
            return True
        ident = hashlib.sha256(username.casefold().encode()).hexdigest()
        own_key = self.cache_format % {"scope": self.scope, "ident": f"{ident}:{address}"}
        global_key = self.cache_format % {"scope": self.global_scope, "ident": ident}
        global_rate = _rate(self.global_scope, self.global_default_rate)
        global_count, global_period = self.parse_rate(global_rate) if global_rate else (None, 0)
        self.now = now = self.timer()
        kept = max(self.duration, global_period)
        own = [t for t in self.cache.get(own_key, []) if t > now - kept]
        self.history = [t for t in own if t > now - self.duration]  # what DRF's wait() reads
        if len(self.history) >= self.num_requests:
            return False
        everyone = [t for t in self.cache.get(global_key, []) if t > now - global_period]
        if global_count is not None and len(everyone) >= global_count and own and own[0] > now - global_period:
            self._pressure_wait = own[0] + global_period - now  # under attack: this address's one try is spent
            return False
        own.insert(0, now)
        self.cache.set(own_key, own, kept)
        if global_count is not None:
            # Only whether the newest global_count fall in the period matters: the list stays that short.
            self.cache.set(global_key, [now, *everyone][:global_count], global_period)
        return True

    def wait(self) -> float | None:
        pressure = getattr(self, "_pressure_wait", None)
        return pressure if pressure is not None else super().wait()


class LoginAddressThrottle(LoginThrottle):
    """Login attempts per client address, for any username: scope ``login_address``, default ``30/min``."""

    scope = "login_address"
    default_rate = "30/min"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        """The connection's address as realtime resolved it (``realtime.proxies``: trusted proxies only)."""
        address = request.META.get("REMOTE_ADDR")
        if not address:
            return None
        return self.cache_format % {"scope": self.scope, "ident": address}


LOGIN_THROTTLES = [LoginUsernameThrottle, LoginAddressThrottle]
