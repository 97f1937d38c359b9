"""Live output: a Redis stream per execution for the live tail, chunks in the database
so it survives Redis.

The log is the job's stdout and stderr interleaved as they arrive, addressed by byte
offset. Each Redis stream entry has the ID `<end offset>-0` and the fields `o` (start
offset) and `d` (bytes), so "everything after offset N" is `XRANGE key (N+1)-0 +`,
and trimming to the tail is `MINID`. Workers also append a database chunk every
KARMCHARI_LOG_FLUSH_SECONDS and delete chunks that fell out of the capped tail
(KARMCHARI_OUTPUT_LIMIT bytes). Readers prefer Redis and fall back to the database.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django_redis import get_redis_connection

from jobs.models import Execution, ExecutionLogChunk
from jobs.runners import tail_text

logger = logging.getLogger(__name__)

_REDIS_RETRY_SECONDS = 5.0
# A stream key lives this long even if its worker dies without closing it.
_REDIS_MAX_TTL = 7 * 86400


def log_key(execution_id: int) -> str:
    prefix = settings.CACHES["default"].get("KEY_PREFIX") or "karmchari"
    return f"{prefix}:log:{execution_id}"


class LogWriter:
    """Appends one running execution's output to Redis at once, to the DB in chunks."""

    def __init__(
        self,
        execution_id: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.execution_id = execution_id
        self.limit: int = settings.KARMCHARI_OUTPUT_LIMIT
        self.size = 0
        self._clock = clock
        self._pending = bytearray()
        self._stored: deque[tuple[int, int]] = deque()  # (offset, end) in the DB
        # Where a store whose outcome is unknown began (it raised, perhaps after
        # its commit went through).
        self._unsure_from: int | None = None
        self._next_flush = clock() + settings.KARMCHARI_LOG_FLUSH_SECONDS
        self._redis_retry_at = 0.0

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        offset = self.size
        self.size += len(chunk)
        self._pending += chunk
        if len(self._pending) > self.limit:
            # More than the whole tail is waiting (the DB is down): keep the tail.
            del self._pending[: len(self._pending) - self.limit]
        self._to_redis(offset, chunk)
        self.flush_if_due()

    def flush_if_due(self) -> None:
        if self._clock() >= self._next_flush:
            self.flush()

    def flush(self) -> None:
        self._next_flush = self._clock() + settings.KARMCHARI_LOG_FLUSH_SECONDS
        if not self._pending:
            return
        offset = self.size - len(self._pending)
        unsure = self._unsure_from
        try:
            with transaction.atomic() if unsure is not None else nullcontext():
                if unsure is not None:
                    # A failed store may have committed all the same (the
                    # connection dropped before its answer came back): whatever is
                    # stored from there on is ours, a prefix of what is pending, or
                    # cut from the head by now. Without this the same offset would
                    # be refused as a duplicate for the rest of the run.
                    ExecutionLogChunk.objects.filter(
                        execution_id=self.execution_id, offset__gte=unsure
                    ).delete()
                ExecutionLogChunk.objects.create(
                    execution_id=self.execution_id,
                    offset=offset,
                    data=bytes(self._pending),
                )
        except DatabaseError:
            if unsure is None:
                self._unsure_from = offset
            self._store_failed()
            return
        self._unsure_from = None
        self._stored.append((offset, self.size))
        self._pending.clear()
        stale = [o for o, end in self._stored if end <= self.size - self.limit]
        if not stale:
            return
        try:
            ExecutionLogChunk.objects.filter(
                execution_id=self.execution_id, offset__in=stale
            ).delete()
        except DatabaseError:
            self._store_failed()  # they stay listed: the next flush drops them
            return
        for _ in stale:
            self._stored.popleft()

    def _store_failed(self) -> None:
        logger.exception("could not store output of %s; will retry", self.execution_id)
        if not connection.in_atomic_block:
            # Perhaps the connection died (a failover): the next try opens a
            # new one instead of failing on the dead one for the rest of the run.
            connection.close()

    def close(self) -> None:
        self.flush()
        if self._pending:
            self.flush()  # once more, on a new connection if the last one died
        if not self.size:
            return  # nothing was written: no stream to expire, skip the round trip
        try:
            get_redis_connection("default").expire(
                log_key(self.execution_id), settings.KARMCHARI_LOG_REDIS_TTL
            )
        except Exception:
            logger.debug("could not set the expiry of a log stream", exc_info=True)

    def _to_redis(self, offset: int, chunk: bytes) -> None:
        now = self._clock()
        if now < self._redis_retry_at:
            return
        key = log_key(self.execution_id)
        try:
            redis = get_redis_connection("default")
            pipe = redis.pipeline(transaction=False)
            pipe.xadd(
                key,
                {"o": offset, "d": chunk},
                id=f"{self.size}-0",
                minid=max(0, self.size - self.limit),
                approximate=True,
            )
            # Every time, not only for the first entry: a stream that Redis lost
            # and this XADD made again must expire too if the worker dies.
            pipe.expire(key, _REDIS_MAX_TTL)
            pipe.execute()
        except Exception:
            # A gap in the live stream is filled from the database by readers.
            logger.warning("could not stream output of %s to Redis", self.execution_id)
            self._redis_retry_at = now + _REDIS_RETRY_SECONDS


@dataclass(frozen=True)
class LogSlice:
    data: bytes
    offset: int  # where `data` starts: the asked offset, or later if it was trimmed
    next_offset: int
    finished: bool  # the execution ended and nothing is left after next_offset

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _take(
    chunks: Iterable[tuple[int, bytes]],
    pos: int,
    out: bytearray,
    limit: int,
    start: int | None,
    trimmed: Callable[[int], bool],
) -> tuple[int, int | None]:
    """Append contiguous bytes from `pos` on; answers the new position and where the
    data started (later than asked when the head was trimmed away: `trimmed(offset)`
    says whether everything before `offset` is gone for good)."""
    for offset, data in chunks:
        end = offset + len(data)
        if end <= pos:
            continue
        if offset > pos:
            if out or not trimmed(offset):
                break  # a hole: stop here, the rest comes from elsewhere or later
            pos = offset
        if start is None:
            start = pos
        piece = data[pos - offset :]
        room = limit - len(out)
        out += piece[:room]
        pos += min(len(piece), room)
        if len(out) >= limit:
            break
    return pos, start


def _redis_chunks(execution_id: int, pos: int) -> list[tuple[int, bytes]]:
    try:
        entries = get_redis_connection("default").xrange(
            log_key(execution_id), min=f"{pos + 1}-0", max="+", count=1000
        )
    except Exception:
        logger.debug("log stream of %s unreadable", execution_id, exc_info=True)
        return []
    return [(int(fields[b"o"]), bytes(fields[b"d"])) for _, fields in entries]


def _db_chunks(execution_id: int, pos: int) -> list[tuple[int, bytes]]:
    chunks = ExecutionLogChunk.objects.filter(execution_id=execution_id)
    first = (
        chunks.filter(offset__lte=pos)
        .order_by("-offset")
        .values_list("offset", flat=True)
        .first()
    )
    rows = chunks.filter(offset__gte=first or 0).order_by("offset")[:1000]
    return [(row.offset, bytes(row.data)) for row in rows]


def _utf8_boundary(data: bytearray) -> int:
    """How many bytes of `data` end on a whole UTF-8 character."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        byte = data[n - back]
        if byte < 0x80:
            return n
        if byte >= 0xC0:  # the lead byte of the last character
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return n if back >= need else n - back
    return n


def _log_size(execution_id: int) -> int:
    """How many bytes the run has written so far, as far as Redis and the database
    know (the end of the last stream entry, or of the last stored chunk)."""
    size = 0
    try:
        last = get_redis_connection("default").xrevrange(log_key(execution_id), count=1)
        if last:
            size = int(last[0][0].split(b"-")[0])
    except Exception:
        logger.debug("log stream of %s unreadable", execution_id, exc_info=True)
    chunk = (
        ExecutionLogChunk.objects.filter(execution_id=execution_id)
        .order_by("-offset")
        .first()
    )
    return max(size, chunk.end if chunk is not None else 0)


def log_read(*, execution: Execution, offset: int, limit: int = 1 << 20) -> LogSlice:
    """The output after byte `offset`, at most `limit` bytes (at least one whole
    character), from Redis or the DB.

    Read `finished` before the data: the worker flushes everything to the database
    before it records the end, so data read (from the database) after seeing
    "finished" is complete.
    A gap in what is found is skipped only when its bytes are gone for good (cut from
    the head by KARMCHARI_OUTPUT_LIMIT, or the run is over); a gap within the kept
    tail of a running job (Redis lost the stream, the database has not caught up
    yet) ends the slice there, and the next read gets those bytes.
    """
    limit = max(limit, 4)
    status = (
        Execution.objects.filter(pk=execution.pk)
        .values_list("status", flat=True)
        .first()
    )
    # Deleted (its job was, or retention pruned it): no more output will come.
    finished = status is None or status in Execution.FINAL_STATUSES
    sizes: list[int] = []

    def trimmed(upto: int) -> bool:
        if finished:
            return True
        if not sizes:
            sizes.append(_log_size(execution.pk))
        return upto <= sizes[0] - settings.KARMCHARI_OUTPUT_LIMIT

    out = bytearray()
    pos = offset
    start: int | None = None
    # A finished run's log is in the database (the worker flushed it before
    # recording the end), where Redis may lack parts (it was away for a moment):
    # read the database first. Redis may still hold the last output of a run whose
    # worker died before flushing it (a lost run): read on from there.
    live = None if finished else _redis_chunks(execution.pk, pos)
    if not live or live[0][0] > pos:
        stored = _db_chunks(execution.pk, pos)
        pos, start = _take(stored, pos, out, limit, start, trimmed)
    if len(out) < limit:
        if live is None:
            live = _redis_chunks(execution.pk, pos)
        pos, start = _take(live, pos, out, limit, start, trimmed)
    if start is not None and start > offset:
        # The head was cut off, perhaps inside a character: start at the next one.
        skip = 0
        while skip < min(3, len(out)) and 0x80 <= out[skip] < 0xC0:
            skip += 1
        del out[:skip]
        start += skip
    more = len(out) >= limit  # the slice may stop short of the log's end
    # The end of a finished log: nothing after this slice (it did not stop at a gap
    # between the database's part and Redis's).
    at_end = finished and not more and (not out or pos >= _log_size(execution.pk))
    cut = _utf8_boundary(out)
    if cut < len(out) and not at_end:
        # Never split a character; its rest comes with the next read. Only the very
        # end of a finished log may hold a partial one (what the job wrote).
        pos -= len(out) - cut
        del out[cut:]
    return LogSlice(
        data=bytes(out),
        offset=offset if start is None else start,
        next_offset=pos,
        finished=at_end,
    )


def log_append(*, execution_id: int, data: bytes) -> int:
    """Append to the log of a run whose output does not come from a worker's pipes
    (external jobs' reports). Answers the new size of the log.

    The caller holds the execution's row lock (one append at a time per run), and
    Redis hears of it once that transaction commits. Of a report longer than
    KARMCHARI_OUTPUT_LIMIT only the tail is kept, its offset counting what went."""
    chunks = ExecutionLogChunk.objects.filter(execution_id=execution_id)
    last = chunks.order_by("-offset").first()
    offset = last.end if last is not None else 0
    size = offset + len(data)
    limit = settings.KARMCHARI_OUTPUT_LIMIT
    if len(data) > limit:
        offset, data = size - limit, data[-limit:]
    ExecutionLogChunk.objects.create(
        execution_id=execution_id, offset=offset, data=data
    )
    if size > limit:
        # Keep the chunk that straddles the cut: drop only those wholly before it.
        keep_from = (
            chunks.filter(offset__lte=size - limit)
            .order_by("-offset")
            .values_list("offset", flat=True)
            .first()
        )
        if keep_from:
            chunks.filter(offset__lt=keep_from).delete()

    def stream() -> None:
        key = log_key(execution_id)
        try:
            pipe = get_redis_connection("default").pipeline(transaction=False)
            pipe.xadd(
                key,
                {"o": offset, "d": data},
                id=f"{size}-0",
                minid=max(0, size - limit),
                approximate=True,
            )
            pipe.expire(key, _REDIS_MAX_TTL)  # no worker closes this stream
            pipe.execute()
        except Exception:
            logger.debug("could not stream a report of %s", execution_id, exc_info=True)

    transaction.on_commit(stream)
    return size


def log_close(*, execution_id: int) -> None:
    """The log of a run that ended without a worker (external jobs): its Redis
    stream expires KARMCHARI_LOG_REDIS_TTL later, as a worker's does."""
    try:
        get_redis_connection("default").expire(
            log_key(execution_id), settings.KARMCHARI_LOG_REDIS_TTL
        )
    except Exception:
        logger.debug("could not set the expiry of a log stream", exc_info=True)


def log_tail_text(*, execution_id: int) -> str:
    """The stored (capped) log as text, e.g. as the output of a finished run or its
    download, marked where its head was cut off."""
    rows = list(
        ExecutionLogChunk.objects.filter(execution_id=execution_id)
        .order_by("offset")
        .values_list("offset", "data")
    )
    if not rows:
        return ""
    data = b"".join(bytes(chunk) for _, chunk in rows)
    limit = settings.KARMCHARI_OUTPUT_LIMIT
    dropped = rows[0][0] + max(0, len(data) - limit)
    return tail_text(data[-limit:], dropped)
