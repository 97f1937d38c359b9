from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django_filters.fields import IsoDateTimeField

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


class InstantField(IsoDateTimeField):
    """An ISO 8601 instant, taken in UTC. Python (and ISO 8601) allow UTC offsets up to
    23:59, PostgreSQL only up to 15:59: sent as given, "-23:39" would be a database
    error (a 500) instead of a comparison."""

    def to_python(self, value: Any) -> datetime | None:
        parsed: datetime | None = super().to_python(value)
        if parsed is None or parsed.tzinfo is None:
            return parsed
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise ValidationError(
                "Enter a date and time within years 1 to 9999.", code="invalid"
            ) from None


class InstantFilter(django_filters.IsoDateTimeFilter):
    field_class = InstantField


class StrictBooleanField(forms.Field):
    """true/false (or 1/0, yes/no, in any case); anything else is a 400, where
    django-filter's boolean filter would drop the filter and answer every row."""

    VALUES = {
        "true": True,
        "1": True,
        "yes": True,
        "false": False,
        "0": False,
        "no": False,
    }

    def to_python(self, value: Any) -> bool | None:
        if value in (None, ""):
            return None
        try:
            return self.VALUES[str(value).strip().lower()]
        except KeyError:
            raise ValidationError(
                "Must be true or false (or 1 or 0).", code="invalid"
            ) from None


class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class JobFilter(django_filters.FilterSet):
    app = django_filters.CharFilter(field_name="app__name")
    enabled = StrictBooleanFilter()

    class Meta:
        model = Job
        fields = ["app", "kind", "enabled", "queue"]


class ExecutionFilter(django_filters.FilterSet):
    job = django_filters.ModelChoiceFilter(queryset=_jobs)
    schedule = django_filters.ModelChoiceFilter(queryset=_schedules)
    app = django_filters.CharFilter(field_name="job__app__name")
    status = django_filters.MultipleChoiceFilter(choices=Execution.Status.choices)
    created_after = InstantFilter(field_name="created", lookup_expr="gte")
    created_before = InstantFilter(field_name="created", lookup_expr="lt")

    class Meta:
        model = Execution
        fields = ["job", "app", "status", "trigger", "schedule"]


class ScheduleFilter(django_filters.FilterSet):
    job = django_filters.ModelChoiceFilter(queryset=_jobs)
    app = django_filters.CharFilter(field_name="job__app__name")
    enabled = StrictBooleanFilter()

    class Meta:
        model = Schedule
        fields = ["job", "app", "kind", "enabled", "timezone"]
