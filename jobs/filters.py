from __future__ import annotations

import django_filters

from jobs.models import Execution, Job, Schedule


class JobFilter(django_filters.FilterSet):
    app = django_filters.CharFilter(field_name="app__name")

    class Meta:
        model = Job
        fields = ["app", "kind", "enabled", "queue"]


class ExecutionFilter(django_filters.FilterSet):
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
    app = django_filters.CharFilter(field_name="job__app__name")

    class Meta:
        model = Schedule
        fields = ["job", "app", "kind", "enabled", "timezone"]
