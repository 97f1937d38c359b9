from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet

from jobs import access
from jobs.models import Execution, Job, Schedule


# With per-app access, filtering by a job or schedule of a hidden app is refused as
# for a missing one (400), not answered with an empty page that would confirm it.
def _jobs(request: Any) -> QuerySet[Job]:
    return access.restrict(Job.objects.all(), getattr(request, "user", None), "app")


def _schedules(request: Any) -> QuerySet[Schedule]:
    return access.restrict(
        Schedule.objects.all(), getattr(request, "user", None), "job__app"
    )


class JobFilter(django_filters.FilterSet):
    app = django_filters.CharFilter(field_name="app__name")

    class Meta:
        model = Job
        fields = ["app", "kind", "enabled", "queue"]


class ExecutionFilter(django_filters.FilterSet):
    job = django_filters.ModelChoiceFilter(queryset=_jobs)
    schedule = django_filters.ModelChoiceFilter(queryset=_schedules)
    app = django_filters.CharFilter(field_name="job__app__name")
    status = django_filters.MultipleChoiceFilter(choices=Execution.Status.choices)
    created_after = django_filters.IsoDateTimeFilter(
        field_name="created", lookup_expr="gte"
    )
    created_before = django_filters.IsoDateTimeFilter(
        field_name="created", lookup_expr="lt"
    )

    class Meta:
        model = Execution
        fields = ["job", "app", "status", "trigger", "schedule"]


class ScheduleFilter(django_filters.FilterSet):
    job = django_filters.ModelChoiceFilter(queryset=_jobs)
    app = django_filters.CharFilter(field_name="job__app__name")

    class Meta:
        model = Schedule
        fields = ["job", "app", "kind", "enabled", "timezone"]
