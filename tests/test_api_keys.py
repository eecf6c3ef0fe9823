"""API keys of the HTTP publish API: their form, their hash, their channel patterns."""

import hashlib

import pytest
from django.core.exceptions import ValidationError

from realtime.models import ApiKey
from realtime.models.apikey import split_key


def test_a_new_key_is_kept_as_its_hash_and_a_prefix_only():
    key = ApiKey(name="svc", channels="*")
    secret = key.set_new_key()
    assert secret.startswith(f"rtk_{key.prefix}_") and len(secret) > 40
    assert key.hashed == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in (key.prefix, key.hashed, key.name, key.channels)
    assert key.matches(secret) and not key.matches(secret + "x")
    assert split_key(secret) == key.prefix


@pytest.mark.parametrize("value", ["", "rtk_", "rtk_short_x", "rtk_abcdefgh_", "bearer", "rtk_abcdefg!_secret"])
def test_malformed_keys_have_no_prefix(value):
    assert split_key(value) is None


@pytest.mark.parametrize(("patterns", "channel", "allowed"), [
    ("orders:*", "orders:42", True),
    ("orders:*", "orders", False),
    ("market-notices", "market-notices", True),
    ("market-notices", "market-notices-2", False),
    ("a\n  b:*  \n", "b:1", True),
    ("*", "anything/at:all", True),
])
def test_a_key_allows_the_channels_its_patterns_match(patterns, channel, allowed):
    assert ApiKey(channels=patterns).allows(channel) is allowed


def test_a_key_needs_at_least_one_pattern():
    key = ApiKey(name="svc", channels="  \n ")
    key.set_new_key()
    with pytest.raises(ValidationError, match="at least one channel pattern"):
        key.clean_fields()  # validators only (full_clean would also query the prefix's uniqueness)
