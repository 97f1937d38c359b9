"""The JobStreamer control bus API (seed 004; compat-spec.md §3).

Apps, jobs, Quartz cron schedules, executions, agents and app stats, in EDN by default
and in JSON when the client accepts only that (liberator's content negotiation). A
POSTed job definition is kept in Job.legacy["jobstreamer"]; a definition whose steps
all carry a shell command becomes a shell job (its steps joined with &&), any other
becomes a "batch" job: stored and shown, refused when run.

The package: `protocol` (negotiation, bodies, answers, routes), `shapes` (lookups and
maps) and `views` (the handlers).
"""

from compat.jobstreamer.protocol import not_found_view
from compat.jobstreamer.views import (
    agent_view,
    agents_view,
    apps_view,
    execution_command_view,
    execution_view,
    executions_view,
    job_view,
    jobs_view,
    schedule_command_view,
    schedule_view,
    stats_view,
)

__all__ = [
    "agent_view",
    "agents_view",
    "apps_view",
    "execution_command_view",
    "execution_view",
    "executions_view",
    "job_view",
    "jobs_view",
    "not_found_view",
    "schedule_command_view",
    "schedule_view",
    "stats_view",
]
