"""Settings for the tests that run the demo project like production (tests/stack.py).

The project's own settings (no test app, no test middleware), with two knobs for isolation from
anything else on the machine: where collectstatic writes, and a channel-layer prefix (Redis pub/sub
channels are shared by every Redis database, so a database number alone does not isolate them).
"""

import os

from project.settings import *  # noqa: F403
from project.settings import CHANNEL_LAYERS, REDIS_URL, STATIC_ROOT

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
STATIC_ROOT = os.environ.get("DJANGO_STATIC_ROOT") or STATIC_ROOT
if REDIS_URL:
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = os.environ.get("CHANNEL_LAYER_PREFIX", "asgi")

# The stack tests log in for every order; the shipped login throttles are tested in test_secure_defaults.py.
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"login_username": None, "login_address": None}}  # noqa: F405
