"""Redis writes that may trail a run's end by a moment, sent together.

Each end of a run forgets its job's cached stats and adds its duration to a
histogram. Sent per run, that was a Redis round trip each, a fifth of a no-op run's
time in the worker (bench/dispatch.py). Instead each process gathers them and a
thread of its own sends them together, KARMCHARI_REDIS_BATCH_SECONDS (0.05 s) after
the first: a job's stats are forgotten once per batch, a histogram bucket is raised
once by the sum. With 0 every batch is sent at once, by the caller.

Stats stay right: the DELs leave after the commits of the ends they follow, so stats
a reader cached in between are dropped by them. If the process dies with a batch
unsent, its metric observations are lost (as when Redis is down; the worker sends
what it holds when it shuts down) and the stats it would have forgotten live out
their cache timeout.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import Counter, defaultdict

from django.conf import settings
from django_redis import get_redis_connection

logger = logging.getLogger(__name__)


class Batch:
    """The commands a pipeline would take (INCR, DEL, HINCRBY, HINCRBYFLOAT),
    gathered; sent in that order."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Also in a child process forked from one that had a batch: a lock, a
        # thread and commands are not inherited.
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._due = threading.Event()
        self._thread: threading.Thread | None = None
        self._incrs: Counter[str] = Counter()
        self._deletes: set[str] = set()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._sums: defaultdict[tuple[str, str], float] = defaultdict(float)

    def _own(self) -> threading.Lock:
        if self._pid != os.getpid():
            self._reset()
        return self._lock

    def incr(self, key: str) -> None:
        with self._own():
            self._incrs[key] += 1

    def delete(self, *keys: str) -> None:
        with self._own():
            self._deletes.update(keys)

    def hincrby(self, key: str, field: str, amount: int = 1) -> None:
        with self._own():
            self._counts[key, field] += amount

    def hincrbyfloat(self, key: str, field: str, amount: float) -> None:
        with self._own():
            self._sums[key, field] += amount

    def send(self) -> None:
        """Have what was gathered sent: at once when batching is off, else by this
        process's sender thread within KARMCHARI_REDIS_BATCH_SECONDS."""
        if settings.KARMCHARI_REDIS_BATCH_SECONDS <= 0:
            self.flush()
            return
        with self._own():
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._sender, name="karmchari-redis-batch", daemon=True
                )
                self._thread.start()
        self._due.set()

    def _sender(self) -> None:
        while True:
            self._due.wait()
            time.sleep(settings.KARMCHARI_REDIS_BATCH_SECONDS)
            self._due.clear()  # what arrives from here on wakes the next round
            self.flush()

    def flush(self) -> int:
        """Send everything gathered in one pipeline; answers how many commands.
        Never raises: Redis is for speed, and these writes are allowed to be lost."""
        with self._own():
            incrs, self._incrs = self._incrs, Counter()
            deletes, self._deletes = self._deletes, set()
            counts, self._counts = self._counts, Counter()
            sums, self._sums = self._sums, defaultdict(float)
        commands = len(incrs) + bool(deletes) + len(counts) + len(sums)
        if not commands:
            return 0
        try:
            pipe = get_redis_connection("default").pipeline(transaction=False)
            for key, amount in incrs.items():
                pipe.incrby(key, amount)
            if deletes:
                pipe.delete(*deletes)
            for (key, field), amount in counts.items():
                pipe.hincrby(key, field, amount)
            for (key, field), total in sums.items():
                pipe.hincrbyfloat(key, field, total)
            pipe.execute()
        except Exception:
            logger.warning(
                "could not send %s stats and metrics commands to Redis",
                commands,
                exc_info=True,
            )
        return commands


# This process's batch, sent also when the process exits normally.
batch = Batch()
atexit.register(batch.flush)
