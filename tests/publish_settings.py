"""tests/auth_settings.py with the HTTP publish API's limits small enough to reach (tests/test_publish_api.py)."""

from tests.auth_settings import *  # noqa: F403
from tests.auth_settings import REALTIME

REALTIME = {**REALTIME, "PUBLISH_API_RATE": "30/m", "PUBLISH_API_MAX_BODY": 4096, "PUBLISH_API_MAX_BATCH": 5}
