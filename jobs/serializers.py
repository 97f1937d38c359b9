from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.exceptions import PermissionDenied

from agents import services as agents_services
from jobs import access, schedules, services
from jobs.models import App, Execution, ExecutionEvent, Job, Schedule
from jobs.permissions import SHELL_DENIED, can_manage_shell_jobs, may_change_jobs
from jobs.runners import SECRET_MASK, SpecError
from jobs.runners.http import placeholder_names
from jobs.secrets import SecretError, clean_secrets
from jobs.stats import RECENT
from karmchari_site.text import unstorable


def _request_user(context: dict[str, Any]) -> Any:
    request = context.get("request")
    return getattr(request, "user", None)


def _restricted(context: dict[str, Any]) -> bool:
    """Whether per-app access narrows this request (never without one: internal)."""
    request = context.get("request")
    return request is not None and access.is_restricted(request.user)


class AppScopedField:
    """A related field whose choices are narrowed to the apps the requesting user
    may see (per-app access): any other object is answered "does not exist", as a
    missing one. Without a request in the context (internal use), all objects."""

    app_path: str

    def get_queryset(self) -> Any:
        queryset = super().get_queryset()  # type: ignore[misc]
        context: dict[str, Any] = self.context  # type: ignore[attr-defined]
        if not _restricted(context):
            return queryset
        return access.restrict(queryset, _request_user(context), self.app_path)


class SlugLookupField(serializers.SlugRelatedField[Any]):
    """A lookup by name that answers "invalid" for a name no row can have (text
    PostgreSQL would refuse with an error instead of "not found")."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and unstorable(data):
            self.fail("invalid")
        return super().to_internal_value(data)


class AppField(AppScopedField, SlugLookupField):
    app_path = ""


class JobField(AppScopedField, serializers.PrimaryKeyRelatedField[Job]):
    app_path = "app"


class AppSerializer(serializers.ModelSerializer[App]):
    users = SlugLookupField(
        slug_field=get_user_model().USERNAME_FIELD,
        queryset=get_user_model().objects.all(),
        many=True,
        required=False,
        help_text="Usernames that see and act on the app's jobs (per-app access); "
        "writing takes jobs.change_app.",
    )
    groups = SlugLookupField(
        slug_field="name",
        queryset=Group.objects.all(),
        many=True,
        required=False,
        help_text="Names of groups whose members see and act on the app's jobs "
        "(per-app access); writing takes jobs.change_app.",
    )

    class Meta:
        model = App
        fields = [
            "name",
            "description",
            "meta",
            "keep_succeeded",
            "keep_failed",
            "keep_days",
            "users",
            "groups",
            "created",
        ]
        read_only_fields = ["created"]

    def validate_meta(self, value: Any) -> Any:
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # Creating an app takes jobs.add_app; granting it to others, change_app too.
        user = _request_user(self.context)
        granting = "users" in attrs or "groups" in attrs
        if granting and user is not None and not user.has_perm("jobs.change_app"):
            raise PermissionDenied(
                "Granting an app to users or groups needs the 'jobs.change_app' "
                "permission."
            )
        return attrs


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


class JobScheduleSerializer(serializers.ModelSerializer[Schedule]):
    """A job's schedules, nested read-only in the job."""

    class Meta:
        model = Schedule
        fields = ["id", "kind", "expression", "timezone", "enabled", "next_run_at"]
        read_only_fields = fields


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {"type": "string", "nullable": True},
        "example": {"DB_PASSWORD": SECRET_MASK},
    }
)
class SecretsField(serializers.Field):  # type: ignore[type-arg]
    """{NAME: value} in; {NAME: "********"} out. Values are never read back."""

    def to_representation(self, value: Any) -> dict[str, str]:
        # The job's related manager: JobViewSet prefetches the names only.
        return {secret.name: SECRET_MASK for secret in value.all()}

    def to_internal_value(self, data: Any) -> dict[str, str | None]:
        try:
            return clean_secrets(data)
        except SecretError as exc:
            raise serializers.ValidationError(exc.errors) from None


class JobSerializer(serializers.ModelSerializer[Job]):
    app = AppField(slug_field="name", queryset=App.objects.all())
    spec = serializers.JSONField(
        help_text='What to run; for a shell job {"command": "...", "cwd": "/abs", '
        '"env": {"NAME": "value"}}. Secret-looking env values and http headers '
        "(KARMCHARI_SECRET_ENV_PATTERN) are moved to `secrets` when saved."
    )
    tags = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, max_length=50
    )
    secrets = SecretsField(
        required=False,
        help_text='Secret values by name, write-only: {"DB_PASSWORD": "..."}. Read '
        f"back as {SECRET_MASK!r}; sending that keeps the stored value; null deletes "
        "a secret. PUT replaces the set, PATCH changes only the names sent. Shell "
        "jobs get them in their environment, http jobs where the spec says ${NAME}.",
    )
    stats = JobStatsSerializer(source="*", read_only=True)
    # Read from the prefetched set: JobViewSet prefetches "schedules".
    schedules = JobScheduleSerializer(many=True, read_only=True)
    # Kala's dependent jobs: this job runs after each success of any of these.
    parents = JobField(
        many=True,
        queryset=Job.objects.all(),
        required=False,
        help_text="Ids of the jobs this one runs after; with per-app access, only "
        "those the caller may see are listed (and kept when others are sent).",
    )
    children = JobField(
        many=True,
        queryset=Job.objects.all(),
        required=False,
        help_text="Ids of the jobs that run after each success of this one (the "
        "same links as their `parents`); with per-app access, as for `parents`.",
    )
    warnings = serializers.SerializerMethodField(
        help_text="Why this job might not run, e.g. no live agent consumes its queue."
    )

    class Meta:
        model = Job
        fields = [
            "id",
            "uid",
            "app",
            "name",
            "description",
            "kind",
            "spec",
            "secrets",
            "enabled",
            "owner",
            "tags",
            "queue",
            "timeout",
            "max_retries",
            "retry_backoff",
            "overlap_policy",
            "max_concurrent",
            "ping_grace",
            "keep_succeeded",
            "keep_failed",
            "keep_days",
            "parents",
            "children",
            "stats",
            "schedules",
            "warnings",
            "created",
            "updated",
        ]
        read_only_fields = ["uid", "created", "updated"]
        extra_kwargs = {
            "timeout": {"min_value": 1},
            "queue": {"allow_blank": False},
        }

    def to_representation(self, instance: Job) -> dict[str, Any]:
        data = super().to_representation(instance)
        if _restricted(self.context):
            user = _request_user(self.context)
            # Jobs in apps hidden from the caller are left out: from the prefetched
            # links, against the caller's app ids read once per response.
            context = self.root.context if self.root else self.context
            if "visible_app_ids" not in context:
                context["visible_app_ids"] = set(
                    access.apps_for(user).values_list("pk", flat=True)
                )
            visible = context["visible_app_ids"]
            for name in ("parents", "children"):
                if name in data:
                    data[name] = [
                        linked.pk
                        for linked in getattr(instance, name).all()
                        if linked.app_id in visible
                    ]
        return data

    def _check_shell_permission(self, attrs: dict[str, Any]) -> None:
        """Shell jobs run any command on the workers: creating one, or changing one
        at all, takes jobs.manage_shell_job on top of the model permission. Linking
        one as a child (or unlinking it) changes when it runs: that too."""
        current = self.instance
        kind = attrs.get("kind", current.kind if current else Job.Kind.SHELL)
        shell = kind == Job.Kind.SHELL or (current and current.kind == Job.Kind.SHELL)
        request = self.context.get("request")
        if request is None or can_manage_shell_jobs(request.user):
            return
        if "children" in attrs:
            before = set(current.children.all()) if current is not None else set()
            if not may_change_jobs(request.user, before ^ set(attrs["children"])):
                shell = True
        if shell:
            raise PermissionDenied(SHELL_DENIED)

    def get_warnings(self, job: Job) -> list[str]:
        # One query per response, shared by every job of a list (the root's context).
        context = self.root.context if self.root else self.context
        if "queues_online" not in context:
            context["queues_online"] = agents_services.queues_online()
        warnings = []
        if job.kind != Job.Kind.EXTERNAL and job.queue not in context["queues_online"]:
            warnings.append(
                f"No live agent consumes queue {job.queue!r}: runs wait until one does."
            )
        if job.kind == Job.Kind.HTTP and isinstance(job.spec, dict):
            # Prefetched by JobViewSet: no query per job.
            stored = {secret.name for secret in job.secrets.all()}
            warnings.extend(
                f"${{{name}}} names no secret of this job: its runs will fail."
                for name in sorted(placeholder_names(job.spec) - stored)
            )
        return warnings

    def _check_links(self, attrs: dict[str, Any]) -> None:
        """Parents and children sent: those in apps hidden from the caller kept,
        and no dependency cycle either way (400 under the field sent)."""
        job = self.instance
        for side in ("parents", "children"):
            if side in attrs and _restricted(self.context):
                attrs[side] = access.keep_hidden_links(
                    _request_user(self.context), job, attrs[side], side
                )
        if "parents" in attrs and (
            why := services.job_parents_cycle(job=job, parents=attrs["parents"])
        ):
            raise serializers.ValidationError({"parents": why})
        if "children" in attrs:
            parents = attrs.get("parents", list(job.parents.all()) if job else [])
            why = services.job_children_cycle(
                job=job, parents=parents, children=attrs["children"]
            )
            if why:
                raise serializers.ValidationError({"children": why})

    def validate_ping_grace(self, value: timedelta | None) -> timedelta | None:
        try:
            services.schedule_check_delay(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        self._check_shell_permission(attrs)
        if "secrets" in attrs and self.instance is not None and not self.partial:
            attrs["replace_secrets"] = True  # PUT: the secrets sent are all of them
        self._check_links(attrs)
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


class ExecutionEventSerializer(serializers.ModelSerializer[ExecutionEvent]):
    actor = serializers.CharField(
        source="actor.get_username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = ExecutionEvent
        fields = ["action", "actor", "created", "detail"]
        read_only_fields = fields


class ExecutionDetailSerializer(ExecutionSerializer):
    events = ExecutionEventSerializer(many=True, read_only=True)

    class Meta(ExecutionSerializer.Meta):
        fields = [
            *ExecutionSerializer.Meta.fields,
            "paused_seconds",
            "output",
            "error",
            "events",
        ]
        read_only_fields = fields


class RunSerializer(serializers.Serializer[Any]):
    parameters = serializers.DictField(required=False, default=dict)


# --- Schedules -----------------------------------------------------------------------


class ScheduleSerializer(serializers.ModelSerializer[Schedule]):
    job = JobField(queryset=Job.objects.all())
    description = serializers.SerializerMethodField()

    class Meta:
        model = Schedule
        fields = [
            "id",
            "job",
            "kind",
            "expression",
            "timezone",
            "description",
            "enabled",
            "epsilon",
            "misfire_policy",
            "jitter",
            "jitter_hashed",
            "start_at",
            "end_at",
            "repetitions_left",
            "next_run_at",
            "last_run_at",
            "created",
            "updated",
        ]
        read_only_fields = ["next_run_at", "last_run_at", "created", "updated"]

    def get_description(self, schedule: Schedule) -> str:
        try:
            return schedules.describe(
                schedule.kind, schedule.expression, schedule.timezone
            )
        except schedules.ScheduleError:
            return ""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.instance is None:
            attrs.setdefault("kind", Schedule.Kind.CRON)
        try:
            services.schedule_check(schedule=self.instance, fields=attrs)
        except services.ScheduleInvalid as exc:
            raise serializers.ValidationError(exc.errors) from None
        return attrs


def validate_schedule_expression(kind: str, expression: str, tz: str) -> None:
    """ValidationError on the field at fault, with the parser's explanation."""
    try:
        services.schedule_check_expression(kind=kind, expression=expression, tz=tz)
    except services.ScheduleInvalid as exc:
        raise serializers.ValidationError(exc.errors) from None


class SchedulePreviewQuerySerializer(serializers.Serializer[Any]):
    n = serializers.IntegerField(min_value=1, max_value=1000, default=10)
    after = serializers.DateTimeField(required=False)

    def validate_after(self, value: datetime) -> datetime:
        try:
            services.schedule_check_moment(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value


class UnsavedPreviewQuerySerializer(SchedulePreviewQuerySerializer):
    kind = serializers.ChoiceField(
        choices=[*Schedule.Kind.values, "quartz"], default=Schedule.Kind.CRON
    )
    expression = serializers.CharField(max_length=200)
    timezone = serializers.CharField(max_length=64, default="UTC")


class SchedulePreviewSerializer(serializers.Serializer[Any]):
    description = serializers.CharField()
    timezone = serializers.CharField()
    fire_times = serializers.ListField(
        child=serializers.CharField(),
        help_text="ISO 8601, with the schedule's UTC offset at each time.",
    )


# --- Execution engine: control, log, reports, stats ---------------------------------


class LogQuerySerializer(serializers.Serializer[Any]):
    offset = serializers.IntegerField(min_value=0, max_value=2**62, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=1 << 22, default=1 << 20)


class LogSliceSerializer(serializers.Serializer[Any]):
    offset = serializers.IntegerField(
        help_text="Where `text` starts: the asked offset, or later when the head of "
        "the log was dropped (it keeps the last KARMCHARI_OUTPUT_LIMIT bytes)."
    )
    next_offset = serializers.IntegerField(help_text="Ask from here next time.")
    text = serializers.CharField()
    finished = serializers.BooleanField(
        help_text="The execution ended and nothing is left after next_offset."
    )
    status = serializers.CharField()


class ExecutionReportSerializer(serializers.Serializer[Any]):
    """What an external job's process sends about its run."""

    status = serializers.ChoiceField(
        choices=[
            Execution.Status.RUNNING,
            Execution.Status.PAUSED,
            Execution.Status.SUCCEEDED,
            Execution.Status.FAILED,
            Execution.Status.KILLED,
            Execution.Status.TIMED_OUT,
        ]
    )
    output = serializers.CharField(
        required=False,
        default="",
        allow_blank=True,
        trim_whitespace=False,
        help_text="Appended to the execution's log.",
    )
    error = serializers.CharField(
        required=False, default="", allow_blank=True, trim_whitespace=False
    )
    exit_code = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        min_value=-(2**31),
        max_value=2**31 - 1,
    )
    reason = serializers.CharField(required=False, default="", allow_blank=True)


class StatsSerializer(serializers.Serializer[Any]):
    success_count = serializers.IntegerField()
    error_count = serializers.IntegerField()
    average_duration = serializers.FloatField(allow_null=True)
    last_attempted_at = serializers.DateTimeField(allow_null=True)
    next_run_at = serializers.DateTimeField(allow_null=True)
    active_executions = serializers.IntegerField()
    executions = serializers.DictField(
        child=serializers.IntegerField(), help_text="Executions by status."
    )
    generated_at = serializers.DateTimeField()


class GlobalStatsSerializer(StatsSerializer):
    jobs = serializers.IntegerField()
    enabled_jobs = serializers.IntegerField()
    disabled_jobs = serializers.IntegerField()


class AppStatsSerializer(GlobalStatsSerializer):
    app = serializers.CharField()
    created = serializers.DateTimeField()


class RecentExecutionSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    status = serializers.CharField()
    trigger = serializers.CharField()
    attempt = serializers.IntegerField()
    created = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    duration = serializers.FloatField(allow_null=True)


class JobStatsDetailSerializer(StatsSerializer):
    job = serializers.IntegerField()
    last_success_at = serializers.DateTimeField(allow_null=True)
    last_error_at = serializers.DateTimeField(allow_null=True)
    recent_executions = RecentExecutionSerializer(
        many=True, help_text=f"The newest {RECENT} executions, newest first."
    )


# --- API tokens ----------------------------------------------------------------------


class TokenRequestSerializer(AuthTokenSerializer):
    name = serializers.CharField(
        max_length=100, default="api", help_text="What or who will use the token."
    )


class TokenAnswerSerializer(serializers.Serializer[Any]):
    token = serializers.CharField(help_text="The key: shown this once, never again.")
    name = serializers.CharField()
