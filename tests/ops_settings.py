"""The wire-safety settings plus tests/opsapp: metrics on REALTIME_METRICS_PORT, JSON connection logs."""

import os

from tests.wire_settings import *  # noqa: F403
from tests.wire_settings import INSTALLED_APPS, REALTIME

INSTALLED_APPS = [*INSTALLED_APPS, "tests.opsapp"]
REALTIME = {
    **REALTIME,
    "METRICS_PORT": int(os.environ.get("REALTIME_METRICS_PORT") or 0) or None,
    "METRICS_LATENCY_SAMPLE": 1,
    "METRICS_MAX_CHANNELS": 20,
    "OPS_SNAPSHOT_INTERVAL": 1,
    "OPS_KEY_PREFIX": os.environ.get("REALTIME_OPS_PREFIX", "realtime:ops"),
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "realtime.ops.logs.JSONFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler"},
        "json": {"class": "logging.StreamHandler", "formatter": "json"},
    },
    "loggers": {
        "realtime": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "realtime.connections": {"handlers": ["json"], "level": "INFO", "propagate": False},
    },
}
