"""realtime.login: walls per address, only a slowdown per username, on the caches the demo uses.

Against a real daphne on the shipped settings: tests/test_secure_defaults.py.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from django.core.cache import cache
from django.test import override_settings
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from realtime.login import LoginUsernameThrottle
from tests.servers import redis_available, require

RATES = {"login_username": "3/min", "login_username_global": "5/min", "login_address": None}
LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "login-tests"}}
REDIS = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/11",
                     "KEY_PREFIX": f"test-login-{os.getpid()}"}}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["locmem", "redis"])
def clock(request):
    if request.param == "redis":
        require(redis_available(), "Redis on 127.0.0.1:6379")
    caches = LOCMEM if request.param == "locmem" else REDIS
    with override_settings(CACHES=caches, REST_FRAMEWORK={"DEFAULT_THROTTLE_RATES": RATES}):
        cache.clear()
        timer = Clock()
        LoginUsernameThrottle.timer = timer
        try:
            yield timer
        finally:
            del LoginUsernameThrottle.timer
            cache.clear()


def attempt(address: str, username: str = "alice") -> tuple[bool, float | None]:
    """One login attempt through the throttle: (allowed, wait)."""
    django_request = APIRequestFactory().post("/api/auth/token/", {"username": username, "password": "x"},
                                              format="json", REMOTE_ADDR=address)
    throttle = LoginUsernameThrottle()
    allowed = throttle.allow_request(Request(django_request, parsers=[JSONParser()]), None)
    return allowed, None if allowed else throttle.wait()


def test_one_address_is_walled_and_another_is_answered(clock):
    assert [attempt("192.0.2.1")[0] for _ in range(3)] == [True] * 3
    allowed, wait = attempt("192.0.2.1")
    assert not allowed and 0 < wait <= 60
    assert attempt("192.0.2.2") == (True, None)  # the owner, elsewhere
    assert attempt("192.0.2.1", "ALICE")[0] is False  # usernames are case-folded
    assert attempt("192.0.2.1", "bob") == (True, None)
    clock.now += 61
    assert attempt("192.0.2.1") == (True, None)


def test_under_attack_every_address_gets_one_attempt_a_period(clock):
    for n in range(5):  # five addresses, five attempts: the username is now under attack
        assert attempt(f"198.51.100.{n}") == (True, None)
    clock.now += 10
    allowed, wait = attempt("198.51.100.0")
    assert not allowed and wait == pytest.approx(50)
    assert attempt("203.0.113.9") == (True, None)  # a fresh address (the owner) is answered at once
    assert attempt("203.0.113.9")[0] is False  # ...once
    clock.now += 51
    assert attempt("198.51.100.0") == (True, None)  # its minute is over
    clock.now += 61
    assert [attempt("198.51.100.0")[0] for _ in range(2)] == [True, True]  # the attack is over: 3 a minute again


def test_the_global_history_stays_as_short_as_the_global_rate(clock):
    for n in range(40):
        attempt(f"203.0.113.{n}")
    ident = hashlib.sha256(b"alice").hexdigest()
    assert len(cache.get(f"throttle_login_username_global_{ident}")) == 5


def test_login_username_none_turns_both_limits_off(clock):
    with override_settings(REST_FRAMEWORK={"DEFAULT_THROTTLE_RATES": {"login_username": None}}):
        assert all(attempt(f"192.0.2.{n % 2}")[0] for n in range(50))


def test_without_a_username_or_an_address_nothing_is_counted(clock):
    django_request = APIRequestFactory().post("/api/auth/token/", {"password": "x"}, format="json")
    for _ in range(10):
        assert LoginUsernameThrottle().allow_request(Request(django_request, parsers=[JSONParser()]), None)
