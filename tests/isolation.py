"""What two test runs on one machine must not share: a Redis database, the log directory, an npm install.

Two copies of the suite may run side by side (two checkouts, or CI beside a developer). Ports are
already free ones and temporary directories unique; what is left is made per run here:

- :func:`redis_db`: a database of the shared Redis at 127.0.0.1:6379 that this run alone uses. The
  modules that use it (tests/stack.py, test_auth_live, test_trading) run one after another and flush
  it or use keys of their own; pub/sub ignores database numbers, so their channel layers take a
  prefix of their own too. ``REALTIME_TEST_REDIS_DB`` chooses one instead.
- :func:`output_dir`: test-output/, or test-output/run-<pid>/ while another run of the same checkout
  writes there (the tests read their servers' logs back).
- :func:`exclusive`: one ``npm ci`` at a time in a directory.

Locks are ``flock`` on files under the temporary directory, held until this process ends, so a run
that dies leaves nothing to clean up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

#: Databases handed out, the highest first: 0 stays the developer's own (``make run-prod``).
DATABASES = range(15, 0, -1)
_held: dict[str, tuple[object, IO[str] | None]] = {}


def _lock_dir() -> Path:
    path = Path(tempfile.gettempdir()) / "realtime-test-locks"
    path.mkdir(exist_ok=True)
    return path


def _try_lock(path: Path) -> IO[str] | None:
    handle = open(path, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def redis_db() -> int:
    """This run's Redis database number (the same for every call in this process)."""
    chosen = os.environ.get("REALTIME_TEST_REDIS_DB")
    if chosen:
        return int(chosen)
    if "redis" not in _held:
        for db in DATABASES:
            handle = _try_lock(_lock_dir() / f"redis-db-{db}.lock")
            if handle is not None:
                _held["redis"] = (db, handle)
                break
        else:
            raise RuntimeError(f"Every Redis database {DATABASES.stop + 1}-{DATABASES.start} is taken by another "
                               "test run on this machine; set REALTIME_TEST_REDIS_DB to choose one")
    return _held["redis"][0]


def output_dir(root: Path) -> Path:
    """``root``, or ``root/run-<pid>`` while another test run of this checkout holds ``root``."""
    root.mkdir(exist_ok=True)
    if "output" not in _held:
        handle = _try_lock(root / ".run.lock")
        path = root if handle is not None else root / f"run-{os.getpid()}"
        path.mkdir(exist_ok=True)
        _held["output"] = (path, handle)
    return _held["output"][0]


@contextlib.contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """Hold ``directory``'s install lock (another run installing there waits)."""
    with open(directory / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
