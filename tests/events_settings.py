"""The topics test settings plus tests/eventsapp's lifecycle receivers, with the lifecycle knobs from
the environment (tests/test_lifecycle_live.py sets them short). Its reconnect storm comes from one
address: up to 1,000 WebSockets per process from 127.0.0.1."""

import os

from tests.topics_settings import *  # noqa: F403
from tests.topics_settings import INSTALLED_APPS, REALTIME

INSTALLED_APPS = [*INSTALLED_APPS, "tests.eventsapp"]
REALTIME = {
    **REALTIME,
    "MAX_CONNECTIONS_PER_IP": 1000,
    "LIFECYCLE_GRACE": float(os.environ.get("TEST_LIFECYCLE_GRACE", "5")),
    "LIFECYCLE_CLAIM_AFTER": float(os.environ.get("TEST_LIFECYCLE_CLAIM_AFTER", "30")),
}
