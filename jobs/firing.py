"""Which slots of a due schedule run now, which are skipped, and why. Pure: no ORM.

The beat tick hands a schedule's first due slot (its stored ``next_run_at``) and the
current time to ``plan()``; the answer says what to insert. Nothing is dropped
silently: every slot that will not run is named in ``skipped`` with a reason (a long
run of missed slots is one entry at the first of them, with the count), so operators
can see what did not happen and why.

Lateness is measured against ``epsilon``, how late a slot may still start:

* slots no later than epsilon run (however many there are);
* later ("missed") slots follow the misfire policy:
  ``run_once`` runs only the latest missed slot (when no slot is on time),
  ``skip`` runs none of them, ``run_all`` runs each missed slot no older than the
  catch-up window, at most ``catchup_max`` of them (the most recent ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from jobs.schedules import Parsed

RUN_ONCE = "run_once"
SKIP = "skip"
RUN_ALL = "run_all"

STALE = (
    "not a slot of this schedule any more: its time zone's rules, or how its "
    "expression is read, changed since the slot was computed"
)


@dataclass(frozen=True)
class Skip:
    slot: datetime
    reason: str


@dataclass(frozen=True)
class Plan:
    run: list[datetime] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    # The first slot after `now`, or None when the schedule has no more slots.
    next_run_at: datetime | None = None


def plan(
    parsed: Parsed,
    *,
    first: datetime,
    now: datetime,
    epsilon: timedelta,
    policy: str,
    end_at: datetime | None = None,
    repetitions_left: int | None = None,
    catchup_window: timedelta = timedelta(days=1),
    catchup_max: int = 1000,
    late_reason: str = "missed",
    scan_limit: int = 10_000,
    until: datetime | None = None,
) -> Plan:
    """Decide the fate of every slot in [first, until] (`until` defaults to `now`;
    a later one fires slots a little ahead, to be sent with their ETA)."""
    # The stored slot was computed once, under the time zone rules and expression
    # reading of that day. A tzdata upgrade (a zone dropping DST) moves the real
    # slot: firing the stored one too would run a daily job twice that day.
    horizon = now if until is None or until < now else until
    stale: list[Skip] = []
    real = parsed.next_after(first - timedelta(microseconds=1))
    if real != first:
        stale = [Skip(first, STALE)]
        if real is None:
            return Plan(skipped=stale)
        first = real
    limit = horizon if end_at is None else min(horizon, end_at)
    due: list[datetime] = []
    overflow = False
    slot: datetime | None = first
    while slot is not None and slot <= limit:
        if len(due) >= scan_limit:
            overflow = True
            break
        due.append(slot)
        slot = parsed.next_after(slot)

    backlog: Skip | None = None
    if overflow:
        # A huge backlog (a per-second schedule disabled for a day): look only at
        # the recent end, where anything could still run, and name the rest once.
        recent = set(_bounded(parsed, max(first, now - epsilon), limit, scan_limit))
        if policy == RUN_ALL:
            recent.update(
                _tail(parsed, max(first, now - catchup_window), limit, catchup_max)
            )
        elif policy == RUN_ONCE:
            recent.update(_tail(parsed, first, limit, 1))
        recent.discard(first)
        due = sorted(recent)
        until = due[0] if due else limit
        backlog = Skip(
            first,
            f"{late_reason}: more than {scan_limit} slots before {_iso(until)} not run",
        )

    on_time = [s for s in due if now - s <= epsilon]
    late = [s for s in due if now - s > epsilon]

    run: list[datetime] = list(on_time)
    if policy == RUN_ALL:
        window = [s for s in late if now - s <= catchup_window][-catchup_max:]
        run = window + run
        kept = set(window)
        dropped = [s for s in late if s not in kept]
        why = f"{late_reason}: older than the catch-up window or over its limit"
    elif policy == RUN_ONCE and late and not on_time:
        run = [late[-1]]
        dropped = late[:-1]
        why = f"{late_reason}: run_once runs only the latest missed slot"
    else:
        dropped = late
        why = f"{late_reason}: later than epsilon ({_seconds(epsilon)})"

    skipped: list[Skip] = [*stale, *([backlog] if backlog else [])]
    skipped += _skip_range(dropped, why)

    exhausted = False
    if repetitions_left is not None and len(run) >= repetitions_left:
        # The runs left go first to slots on time (or fired ahead), earliest first:
        # what the preview shows; then to missed ones, latest first. Missed slots
        # left out are recorded, not lost; timely ones after the last run are past
        # the schedule's end, as any later slot.
        timely = [s for s in run if now - s <= epsilon]
        missed = [s for s in run if now - s > epsilon]
        keep = set((timely + missed[::-1])[:repetitions_left])
        skipped += _skip_range(
            [s for s in missed if s not in keep],
            f"repetitions: only {repetitions_left} left for these slots",
        )
        run = [s for s in run if s in keep]
        exhausted = True

    next_run_at = None
    if not exhausted:
        after = max(horizon, due[-1]) if due else horizon
        candidate = parsed.next_after(after)
        if candidate is not None and (end_at is None or candidate <= end_at):
            next_run_at = candidate
    return Plan(run=run, skipped=skipped, next_run_at=next_run_at)


def unrun(
    parsed: Parsed,
    *,
    first: datetime,
    until: datetime,
    why: str,
    end_at: datetime | None = None,
    repetitions_left: int | None = None,
    scan_limit: int = 10_000,
) -> list[Skip]:
    """The slots in [first, until] that will never run, named as one record (at
    the first, counting them): for a schedule re-timed while it had slots due."""
    limit = until if end_at is None else min(until, end_at)
    if first > limit:
        return []
    slots = _bounded(parsed, first, limit, scan_limit + 1) or [first]
    if repetitions_left is not None:
        slots = slots[: max(1, repetitions_left)]
    if len(slots) > scan_limit:
        return [Skip(first, f"{why}; more than {scan_limit} slots to {_iso(limit)}")]
    return _skip_range(slots, why)


def _skip_range(slots: list[datetime], why: str) -> list[Skip]:
    """One skipped record for `slots` (at the first, counting the rest), if any."""
    if len(slots) > 1:
        why = f"{why}; {len(slots)} slots to {_iso(slots[-1])}"
    return [Skip(slots[0], why)] if slots else []


def _iso(moment: datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%SZ}"


def _seconds(delta: timedelta) -> str:
    return f"{delta.total_seconds():g}s"


def _bounded(
    parsed: Parsed, after: datetime, until: datetime, limit: int
) -> list[datetime]:
    slots: list[datetime] = []
    # iter_fires answers slots strictly after its start: step back to include `after`.
    for slot in parsed.iter_fires(after - timedelta(seconds=1), until):
        slots.append(slot)
        if len(slots) >= limit:
            break
    return slots


def _tail(parsed: Parsed, lo: datetime, hi: datetime, n: int) -> list[datetime]:
    """The last `n` slots in [lo, hi], found by widening steps back from `hi`."""
    step = timedelta(seconds=1)
    while True:
        start = max(lo, hi - step)
        slots = _bounded(parsed, start, hi, 100_000)
        if len(slots) >= n or start == lo:
            return slots[-n:]
        step *= 2
