"""Loaded with `-p tests.testenv` before pytest-django reads the settings.

The test run gets a data directory of its own (SQLite file, embedded Redis socket), so
it never touches ./data or a running `make run`.
"""

from __future__ import annotations

import os
import tempfile

if "KARMCHARI_DATA_DIR" not in os.environ:
    os.environ["KARMCHARI_DATA_DIR"] = tempfile.mkdtemp(prefix="karmchari-test-")
os.environ.setdefault("KARMCHARI_KILL_GRACE", "2")
# Stats and metrics refreshed by each end at once, so tests can look right after
# (tests/jobs/test_redis_batch.py covers the batching).
os.environ.setdefault("KARMCHARI_REDIS_BATCH_SECONDS", "0")
