"""The stack behind nginx (tests/test_edge.py): the demo project, the test app, and a small per-address cap."""

from tests.trading_settings import *  # noqa: F403
from tests.trading_settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.liveapp"]
#: Per process: behind nginx's round robin over two daphne, 2 * 3 connections from one address at most.
REALTIME = {"MAX_CONNECTIONS_PER_IP": 3}
