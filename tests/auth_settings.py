"""The live tests' settings with two knobs from the environment, for servers started by tests/test_auth_live.py.

``REALTIME_STRICT_TOKENS=1`` turns on ``REALTIME["STRICT_TOKENS"]``; ``CHANNEL_LAYER_PREFIX`` isolates
a Redis channel layer from anything else using the same Redis (pub/sub ignores database numbers).
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import CHANNEL_LAYERS, REALTIME, REDIS_URL

REALTIME = {**REALTIME, "STRICT_TOKENS": os.environ.get("REALTIME_STRICT_TOKENS") == "1"}
if REDIS_URL:
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = os.environ.get("CHANNEL_LAYER_PREFIX", "asgi")
