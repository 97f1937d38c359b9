"""Routes of the three compatibility APIs, mounted at the site root after the admin
and /api/ (karmchari_site/urls.py).

Order matters: the fixed names (/registerJob, /jobState, /apps, /agents, /agent/...,
/api/v1/...) come before JobStreamer's /{app}/... patterns; App refuses those names.
Kala's routes take the trailing slash as optional, so a slashless POST is served, not
redirected and lost. Karmchari's take none, as the original. Any other path below
JobStreamer's (`/{app}/job...`, `/{app}/jobs/...`, `/apps/...`, `/agent/...`) answers
its 404.
"""

from __future__ import annotations

from django.urls import path, re_path

from compat import jobstreamer, kala, karmchari
from jobs.models import RESERVED_APP_NAMES

ID = r"(?P<job_id>[^/]+)"

karmchari_patterns = [
    path("registerJob", karmchari.register_job, name="karmchari-register"),
    path("jobState", karmchari.job_state, name="karmchari-state"),
]

kala_patterns = [
    re_path(r"^api/v1/job/?$", kala.jobs_view, name="kala-jobs"),
    re_path(rf"^api/v1/job/stats/{ID}/?$", kala.job_stats_view, name="kala-job-stats"),
    re_path(rf"^api/v1/job/start/{ID}/?$", kala.start_view, name="kala-start"),
    re_path(rf"^api/v1/job/enable/{ID}/?$", kala.enable_view, name="kala-enable"),
    re_path(rf"^api/v1/job/disable/{ID}/?$", kala.disable_view, name="kala-disable"),
    re_path(rf"^api/v1/job/{ID}/?$", kala.job_view, name="kala-job"),
    re_path(r"^api/v1/stats/?$", kala.stats_view, name="kala-stats"),
]

# Never a reserved name, so /api/jobs or /admin/jobs still reach Django's
# slash-appending redirect instead of looking like a JobStreamer app.
_RESERVED = "|".join(RESERVED_APP_NAMES)
APP = rf"(?!(?i:{_RESERVED})/)(?P<app>[A-Za-z0-9][A-Za-z0-9_.-]*)"
NAME = r"(?P<name>[^/]+)"

jobstreamer_patterns = [
    re_path(r"^apps/?$", jobstreamer.apps_view, name="js-apps"),
    re_path(r"^agents/?$", jobstreamer.agents_view, name="js-agents"),
    re_path(
        r"^agent/(?P<instance_id>[^/]+)/?$", jobstreamer.agent_view, name="js-agent"
    ),
    re_path(rf"^{APP}/jobs/?$", jobstreamer.jobs_view, name="js-jobs"),
    re_path(rf"^{APP}/stats/?$", jobstreamer.stats_view, name="js-stats"),
    re_path(
        rf"^{APP}/job/{NAME}/schedule/(?P<command>pause|resume)/?$",
        jobstreamer.schedule_command_view,
        name="js-schedule-command",
    ),
    re_path(
        rf"^{APP}/job/{NAME}/schedule/?$",
        jobstreamer.schedule_view,
        name="js-schedule",
    ),
    re_path(
        rf"^{APP}/job/{NAME}/executions/?$",
        jobstreamer.executions_view,
        name="js-executions",
    ),
    re_path(
        rf"^{APP}/job/{NAME}/execution/(?P<execution_id>\d+)/(?P<command>[a-z]+)/?$",
        jobstreamer.execution_command_view,
        name="js-execution-command",
    ),
    re_path(
        rf"^{APP}/job/{NAME}/execution/(?P<execution_id>\d+)/?$",
        jobstreamer.execution_view,
        name="js-execution",
    ),
    re_path(rf"^{APP}/job/{NAME}/?$", jobstreamer.job_view, name="js-job"),
    # Last: any other path below JobStreamer's own routes is its "Resource Not
    # Found". Other unknown paths (a typo in a browser) stay Django's 404 page.
    re_path(
        rf"^(?:(?:apps|agents|agent)/.|{APP}/(?:jobs|stats|job)(?:/|$))",
        jobstreamer.not_found_view,
        name="js-404",
    ),
]

urlpatterns = [*karmchari_patterns, *kala_patterns, *jobstreamer_patterns]
