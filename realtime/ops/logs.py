"""A JSON formatter for log pipelines: one object per line, with realtime's structured fields.

```python
LOGGING = {
    "version": 1,
    "formatters": {"json": {"()": "realtime.ops.logs.JSONFormatter"}},
    "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json"}},
    "loggers": {"realtime": {"handlers": ["json"], "level": "INFO", "propagate": False}},
}
```
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any


class JSONFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...fields}``; fields from ``extra={"realtime": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "realtime", None)
        if isinstance(fields, dict):
            data.update(fields)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)
