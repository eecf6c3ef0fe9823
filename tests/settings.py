"""The demo project's settings plus the test endpoints of tests/liveapp.

``REALTIME_DIRECT_WRITES=0`` in a server's environment turns ``REALTIME["DIRECT_WRITES"]`` off (the
``wire`` fixture of tests/conftest.py runs some servers so).
"""

import os

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS, MIDDLEWARE

INSTALLED_APPS = [*INSTALLED_APPS, "tests.liveapp"]
# The demo chat's online list (project/chat/online.py) is on only for the servers that test it
# (DEMO_ONLINE_LIST=1 in their environment): its lifecycle receivers would make every test server
# track its users and write the cache on each login.
DEMO_ONLINE_LIST = os.environ.get("DEMO_ONLINE_LIST") == "1"
INSTALLED_APPS += ["tests.topicsapp"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
MIDDLEWARE = [*MIDDLEWARE, "tests.liveapp.middleware.Stamp"]
REALTIME = {"MAX_SSE_STREAMS_PER_USER": 3, "DIRECT_WRITES": os.environ.get("REALTIME_DIRECT_WRITES", "1") != "0"}
# The live tests log in far more often than the shipped login throttles allow (tests/test_secure_defaults.py
# runs the shipped rates on a server of its own).
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"login_username": None, "login_address": None}}  # noqa: F405
