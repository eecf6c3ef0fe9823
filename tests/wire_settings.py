"""The live test settings plus tests/wireapp, with limits small enough to reach quickly."""

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS, REALTIME

INSTALLED_APPS = [*INSTALLED_APPS, "tests.wireapp"]
REALTIME = {
    **REALTIME,
    "SLOW_CONSUMER_TIMEOUT": 2,
    "MAX_MESSAGE_SIZE": 65536,
    "MESSAGE_RATE": None,
    "RELEASE_MEMORY": False,
}
