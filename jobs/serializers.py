from __future__ import annotations

from typing import Any

from rest_framework import serializers

from jobs import services
from jobs.models import App, Execution, Job
from jobs.runners import SpecError


class AppSerializer(serializers.ModelSerializer[App]):
    class Meta:
        model = App
        fields = ["name", "description", "meta", "created"]
        read_only_fields = ["created"]

    def validate_meta(self, value: Any) -> Any:
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        return value


class JobStatsSerializer(serializers.ModelSerializer[Job]):
    average_duration = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = Job
        fields = [
            "success_count",
            "error_count",
            "last_success_at",
            "last_error_at",
            "last_attempted_at",
            "average_duration",
        ]
        read_only_fields = fields


class JobSerializer(serializers.ModelSerializer[Job]):
    app = serializers.SlugRelatedField(slug_field="name", queryset=App.objects.all())
    spec = serializers.JSONField(
        help_text='What to run; for a shell job {"command": "...", "cwd": "/abs", '
        '"env": {"NAME": "value"}}.'
    )
    tags = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, max_length=50
    )
    stats = JobStatsSerializer(source="*", read_only=True)

    class Meta:
        model = Job
        fields = [
            "id",
            "app",
            "name",
            "description",
            "kind",
            "spec",
            "enabled",
            "owner",
            "tags",
            "queue",
            "timeout",
            "max_retries",
            "retry_backoff",
            "overlap_policy",
            "max_concurrent",
            "stats",
            "created",
            "updated",
        ]
        read_only_fields = ["created", "updated"]
        extra_kwargs = {
            "timeout": {"min_value": 1},
            "queue": {"allow_blank": False},
        }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        kind = attrs.get(
            "kind", self.instance.kind if self.instance else Job.Kind.SHELL
        )
        if "spec" in attrs or "kind" in attrs or self.instance is None:
            spec = attrs.get("spec", self.instance.spec if self.instance else None)
            try:
                attrs["spec"] = services.job_clean_spec(kind=kind, spec=spec)
            except SpecError as exc:
                raise serializers.ValidationError({"spec": exc.errors}) from None
        return attrs


class ExecutionSerializer(serializers.ModelSerializer[Execution]):
    """The list view: everything but the (possibly large) output."""

    job_name = serializers.CharField(source="job.name", read_only=True)
    app = serializers.CharField(source="job.app.name", read_only=True)
    duration = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = Execution
        fields = [
            "id",
            "job",
            "job_name",
            "app",
            "schedule",
            "scheduled_for",
            "trigger",
            "attempt",
            "retry_of",
            "status",
            "desired_state",
            "worker",
            "pid",
            "exit_code",
            "reason",
            "created",
            "started_at",
            "finished_at",
            "duration",
            "external_id",
            "parameters",
        ]
        read_only_fields = fields


class ExecutionDetailSerializer(ExecutionSerializer):
    class Meta(ExecutionSerializer.Meta):
        fields = [*ExecutionSerializer.Meta.fields, "output", "error"]
        read_only_fields = fields


class RunSerializer(serializers.Serializer[Any]):
    parameters = serializers.DictField(required=False, default=dict)
