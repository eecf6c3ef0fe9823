"""API keys of the HTTP publish API: stored hashed, scoped to channel patterns, managed in the admin."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from fnmatch import fnmatchcase

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

#: Keys read ``rtk_<prefix>_<secret>``; the prefix finds the row, the whole key is hashed.
KEY_PREFIX = "rtk_"


def hash_key(key: str) -> str:
    """The stored form of a key: SHA-256 of the whole key.

    A fast hash is right here, unlike for passwords: the secret is 32 random bytes, so there is
    nothing to guess from a leaked hash, and a slow hash on every request would be a way to burn
    the server's CPU with bad keys.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def split_key(key: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    prefix, _, secret = key[len(KEY_PREFIX):].partition("_")
    return prefix if len(prefix) == 8 and prefix.isalnum() and secret else None


def validate_patterns(value: str) -> None:
    patterns = [line.strip() for line in value.splitlines() if line.strip()]
    if not patterns:
        raise ValidationError("List at least one channel pattern, one per line (e.g. orders:* or market-notices)")
    for pattern in patterns:
        if len(pattern) > 200:
            raise ValidationError(f"A pattern is at most 200 characters: {pattern[:40]!r}...")


class ApiKey(models.Model):
    """A key another service publishes with; it may publish only to channels matching ``channels``."""

    name = models.CharField(max_length=100, help_text="Who uses it, e.g. billing-service")
    prefix = models.CharField(max_length=8, unique=True, editable=False)
    hashed = models.CharField(max_length=64, editable=False)
    channels = models.TextField(
        validators=[validate_patterns],
        help_text="Channel patterns this key may publish to, one per line: exact names or * wildcards "
                  "(orders:*, market-notices). * alone allows every channel.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        app_label = "realtime"
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({KEY_PREFIX}{self.prefix}_…)"

    def set_new_key(self) -> str:
        """Give this key a new secret and return the whole key; only its hash is kept."""
        prefix = secrets.token_hex(4)
        key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        self.prefix, self.hashed = prefix, hash_key(key)
        return key

    def matches(self, key: str) -> bool:
        """Whether ``key`` is this key (compared in constant time)."""
        return hmac.compare_digest(self.hashed, hash_key(key))

    @property
    def patterns(self) -> list[str]:
        return [line.strip() for line in self.channels.splitlines() if line.strip()]

    def allows(self, channel: str) -> bool:
        """Whether this key may publish to ``channel`` (``*`` matches any run of characters, ``:`` included)."""
        return any(fnmatchcase(channel, pattern) for pattern in self.patterns)
