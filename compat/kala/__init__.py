"""Kala's JSON API under /api/v1/ (seed 003; compat-spec.md §2).

Kala jobs are shell jobs in KARMCHARI_COMPAT_APP; their Kala id is Job.uid. What Kala
keeps and Karmchari has no field for (the free-text name, the epsilon, the schedule
as sent beside the expression stored for it, a blank command) lives in
Job.legacy["kala"]. Schedules are read as Kala reads them (`schedule`).
Responses are Go's: compact JSON ending in a
newline, Go time strings (zero time for "never"), the original's field order, plus the
seed README's spellings wherever an object can carry both.

The package: `protocol` (Go's wire format: errors, times, JSON and plain answers),
`decoding` (a POSTed job, with Go's type checks), `schedule` (Kala's schedule
grammar), `shapes` (jobs, runs and stats as Kala shows them) and `views` (create and
the handlers).
"""

from compat.kala.views import (
    disable_view,
    enable_view,
    job_stats_view,
    job_view,
    jobs_view,
    start_view,
    stats_view,
)

__all__ = [
    "disable_view",
    "enable_view",
    "job_stats_view",
    "job_view",
    "jobs_view",
    "start_view",
    "stats_view",
]
