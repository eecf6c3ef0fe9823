"""The test settings with a short presence timeout, for the process-killing presence test."""

import os

from tests.settings import *  # noqa: F403
from tests.settings import REALTIME

REALTIME = {**REALTIME, "PRESENCE_TIMEOUT": float(os.environ.get("TEST_PRESENCE_TIMEOUT", "30"))}
