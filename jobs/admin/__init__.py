"""The operator console: the dashboard (admin index) and one module per room (apps,
schedules, jobs, executions, tokens, notifications). Every change goes through
jobs.services; these modules validate and present."""

from __future__ import annotations

from django.contrib import admin

# Importing a room registers its models (Django autodiscovers jobs.admin).
from jobs.admin import apps, executions, jobs, notifications, schedules, tokens  # noqa: F401
from jobs.admin.jobs import JobForm
from jobs.admin.schedules import ScheduleForm
from jobs.authentication import admin_login_limited

__all__ = ["JobForm", "ScheduleForm"]

admin.site.site_header = "Karmchari"
admin.site.site_title = "Karmchari"
admin.site.index_title = "Operator console"
# The admin index is the dashboard (figures from stats.stats_dashboard(), cached).
admin.site.index_template = "admin/jobs/dashboard.html"
# Guessing passwords at the admin's login form is limited as at the API's.
admin.site.login = admin_login_limited(admin.site.login)  # type: ignore[method-assign]
