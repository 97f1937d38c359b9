from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError
from django.db.models import Prefetch, ProtectedError
from django.db.models.query import QuerySet
from django.http import HttpResponse
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from audit.middleware import client_address
from jobs import access, logs, schedules, services, stats, tokens
from jobs.authentication import password_login_limited
from jobs.engine_views import ExecutionEngineActions, JobEngineActions
from jobs.filters import ExecutionFilter, JobFilter, ScheduleFilter
from jobs.models import App, Execution, Job, JobSecret, Schedule
from jobs.permissions import SHELL_DENIED, may_change_jobs
from jobs.secrets import SecretError
from jobs.serializers import (
    AppSerializer,
    AppStatsSerializer,
    ExecutionDetailSerializer,
    ExecutionSerializer,
    JobSerializer,
    RunSerializer,
    SchedulePreviewQuerySerializer,
    SchedulePreviewSerializer,
    ScheduleSerializer,
    TokenAnswerSerializer,
    TokenRequestSerializer,
    UnsavedPreviewQuerySerializer,
    validate_schedule_expression,
)

logger = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus 409 for state conflicts and protected deletes."""
    if isinstance(exc, services.Conflict):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, services.Gone):
        return Response({"detail": str(exc)}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, SecretError):
        # A mask sent back for a secret that is not stored (checked by the service).
        return Response({"secrets": exc.errors}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, services.DependencyCycle):
        return Response({exc.field: [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, services.ServiceError):
        return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, RequestDataTooBig):
        # Django answers an HTML 400 page; an API client gets the reason, in JSON.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {"detail": f"The request body is too large: at most {limit} bytes."},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, ProtectedError):
        names = sorted({str(obj) for obj in exc.protected_objects})[:10]
        return Response(
            {"detail": f"Still in use by: {', '.join(names)}. Delete those first."},
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, IntegrityError):  # after ProtectedError, its subclass
        # Validation checks uniqueness first; only a race (another request saved
        # the same name in between) gets here. Nothing was stored.
        logger.info("integrity error answered 409: %s", exc)
        return Response(
            {
                "detail": "Another request saved a conflicting object (the same name?) "
                "in the meantime; nothing was changed. Reload and retry."
            },
            status=status.HTTP_409_CONFLICT,
        )
    return drf_exception_handler(exc, context)


class LoginRateThrottle(ScopedRateThrottle):
    """DRF's scoped throttle, keyed by the client's address as the rest of the
    project reads it (audit.middleware.client_address): DRF's own reading takes the
    whole X-Forwarded-For header, which a client can vary to dodge the limit."""

    def get_ident(self, request: Request) -> str:
        return client_address(request) or super().get_ident(request)


class ObtainTokenView(APIView):
    """POST username and password (and optionally a token `name`) for a new API
    token; the key is in the answer, once. Throttled per client address
    (KARMCHARI_LOGIN_RATE) so passwords cannot be guessed at speed."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    throttle_classes = [LoginRateThrottle]
    throttle_scope = "login"

    @extend_schema(request=TokenRequestSerializer, responses=TokenAnswerSerializer)
    def post(self, request: Request) -> Response:
        serializer = TokenRequestSerializer(
            data=request.data, context={"request": request}
        )
        username = request.data.get("username") if hasattr(request.data, "get") else ""
        password_login_limited(
            request,
            str(username or ""),
            lambda: serializer.is_valid(raise_exception=True),
        )
        token, key = tokens.token_create(
            user=serializer.validated_data["user"],
            name=serializer.validated_data["name"],
        )
        return Response({"token": key, "name": token.name})


# Narrows a viewset's queryset to the apps the user may see (per-app access): rows of
# other apps answer 404, as missing ones. (A comment, not a docstring: the schema
# would take it as the description of every operation.)
class AppScopedMixin:
    app_path: str

    def get_queryset(self) -> QuerySet[Any]:
        queryset: QuerySet[Any] = super().get_queryset()  # type: ignore[misc]
        request: Request = self.request  # type: ignore[attr-defined]
        return access.restrict(queryset, request.user, self.app_path)


class AppViewSet(AppScopedMixin, viewsets.ModelViewSet[App]):
    queryset = App.objects.prefetch_related("users", "groups")
    serializer_class = AppSerializer
    app_path = ""
    lookup_field = "name"
    lookup_value_regex = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
    search_fields = ["name", "description"]
    ordering_fields = ["name", "created"]
    # The app's figures count its jobs and runs: seen with the jobs' permission, as
    # /api/stats/ is.
    action_permissions = {"app_stats": ["jobs.view_app", "jobs.view_job"]}

    @extend_schema(responses=AppStatsSerializer)
    @action(detail=True, methods=["get"], url_path="stats")
    def app_stats(self, request: Request, name: str | None = None) -> Response:
        """Totals over this app's jobs (cached; refreshed on change)."""
        return Response(AppStatsSerializer(stats.stats_app(app=self.get_object())).data)

    def perform_create(self, serializer: BaseSerializer[App]) -> None:
        serializer.instance = services.app_create(
            **serializer.validated_data, creator=self.request.user
        )

    def perform_update(self, serializer: BaseSerializer[App]) -> None:
        assert serializer.instance is not None
        serializer.instance = services.app_update(
            app=serializer.instance, **serializer.validated_data
        )


class JobViewSet(JobEngineActions, AppScopedMixin, viewsets.ModelViewSet[Job]):
    queryset = Job.objects.select_related("app").prefetch_related(
        "schedules",
        "parents",
        "children",
        # Names only: the API never shows a value, so it never loads one.
        Prefetch("secrets", queryset=JobSecret.objects.only("pk", "job_id", "name")),
    )
    serializer_class = JobSerializer
    app_path = "app"
    filterset_class = JobFilter
    search_fields = ["name", "description", "owner"]
    ordering_fields = ["name", "created", "last_attempted_at"]
    action_permissions = {
        "run": ["jobs.add_execution"],
        "enable": ["jobs.change_job"],
        "disable": ["jobs.change_job"],
    }

    def perform_create(self, serializer: BaseSerializer[Job]) -> None:
        serializer.instance = services.job_create(**serializer.validated_data)

    def perform_update(self, serializer: BaseSerializer[Job]) -> None:
        assert serializer.instance is not None
        serializer.instance = services.job_update(
            job=serializer.instance, **serializer.validated_data
        )

    def perform_destroy(self, instance: Job) -> None:
        # Kala's rule: children left with no other parent go too; runs are stopped.
        services.job_delete(job=instance, user=self.request.user)

    @extend_schema(request=RunSerializer, responses={202: ExecutionSerializer})
    @action(detail=True, methods=["post"])
    def run(self, request: Request, pk: str | None = None) -> Response:
        """Run the job now; answers at once with the pending execution."""
        job = self.get_object()
        params = RunSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        execution = services.job_trigger(
            job=job,
            trigger=Execution.Trigger.API,
            parameters=params.validated_data["parameters"],
        )
        return Response(
            ExecutionSerializer(execution).data, status=status.HTTP_202_ACCEPTED
        )

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def enable(self, request: Request, pk: str | None = None) -> Response:
        job = services.job_update(job=self._changeable(request), enabled=True)
        return Response(self.get_serializer(job).data)

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def disable(self, request: Request, pk: str | None = None) -> Response:
        job = services.job_update(job=self._changeable(request), enabled=False)
        return Response(self.get_serializer(job).data)

    def _changeable(self, request: Request) -> Job:
        """The job, if this user may change it (a shell job needs the permission
        for enabling or disabling too, as for any other change)."""
        job: Job = self.get_object()
        if not may_change_jobs(request.user, [job]):
            raise PermissionDenied(SHELL_DENIED)
        return job


class PlainTextRenderer(BaseRenderer):
    """Lets `Accept: text/plain` through content negotiation. An error asked for
    as text is its message (`detail`), or its JSON; with `*/*` it is JSON."""

    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Any = None,
    ) -> bytes:
        if data is None:
            return b""
        if isinstance(data, dict) and isinstance(data.get("detail"), str):
            return f"{data['detail']}\n".encode()
        if isinstance(data, str):
            return data.encode()
        return json.dumps(data, default=str).encode()


class ExecutionPagination(CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def decode_cursor(self, request: Request) -> Cursor | None:
        """DRF's, but a position that is no id (a cursor edited by hand) is an
        invalid cursor, not a 500."""
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            try:
                int(cursor.position)
            except ValueError:
                raise NotFound(self.invalid_cursor_message) from None
        return cursor


class ExecutionViewSet(
    ExecutionEngineActions, AppScopedMixin, viewsets.ReadOnlyModelViewSet[Execution]
):
    queryset = Execution.objects.select_related("job__app")
    app_path = "job__app"
    filterset_class = ExecutionFilter
    pagination_class = ExecutionPagination
    # Cursor pagination fixes the order (newest first); no ordering or search.
    filter_backends = [DjangoFilterBackend]

    def get_queryset(self) -> QuerySet[Execution]:
        queryset = super().get_queryset()
        if self.action == "list":
            # The list never shows output; don't haul megabytes of it from the DB.
            queryset = queryset.defer("output", "error")
        return queryset

    def get_serializer_class(self) -> type[BaseSerializer[Execution]]:
        if self.action == "retrieve":
            return ExecutionDetailSerializer
        return ExecutionSerializer

    @extend_schema(responses={(200, "text/plain"): OpenApiTypes.STR})
    @action(
        detail=True,
        methods=["get"],
        url_path="output",
        # JSON first: errors to `Accept: */*` (curl, browsers) come as JSON; the
        # file itself is always text/plain.
        renderer_classes=[JSONRenderer, PlainTextRenderer],
    )
    def download(self, request: Request, pk: str | None = None) -> HttpResponse:
        """The stored output as a text file: the combined log (stdout and stderr as
        written), or for runs without one, stdout then stderr."""
        execution = self.get_object()
        text = logs.log_tail_text(execution_id=execution.pk)
        if not text:
            text = execution.output + (
                f"\n--- stderr ---\n{execution.error}" if execution.error else ""
            )
        response = HttpResponse(text, content_type="text/plain; charset=utf-8")
        name = f"{execution.job.name}-{execution.pk}.log"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


# --- Schedules -----------------------------------------------------------------------


def _preview_answer(
    kind: str,
    expression: str,
    tz: str,
    after: datetime | None,
    n: int,
    saved: Schedule | None = None,
) -> dict[str, Any]:
    zone = ZoneInfo(tz)
    after = after or timezone.now()
    if saved is None:
        times = schedules.preview(kind, expression, tz, after, n)
    elif saved.enabled and saved.job.enabled:
        times = services.schedule_upcoming(saved, after=after, n=n)
    else:
        times = []  # what it will fire: nothing while it or its job is disabled
    return {
        "description": schedules.describe(kind, expression, tz),
        "timezone": tz,
        "fire_times": [moment.astimezone(zone).isoformat() for moment in times],
    }


class ScheduleViewSet(AppScopedMixin, viewsets.ModelViewSet[Schedule]):
    queryset = Schedule.objects.select_related("job")
    serializer_class = ScheduleSerializer
    app_path = "job__app"
    filterset_class = ScheduleFilter
    search_fields = ["expression", "job__name", "job__app__name"]
    ordering_fields = ["next_run_at", "created", "id"]
    ordering = ["id"]

    def perform_create(self, serializer: BaseSerializer[Schedule]) -> None:
        serializer.instance = services.schedule_create(**serializer.validated_data)

    def perform_update(self, serializer: BaseSerializer[Schedule]) -> None:
        assert serializer.instance is not None
        serializer.instance = services.schedule_update(
            schedule=serializer.instance, **serializer.validated_data
        )

    def perform_destroy(self, instance: Schedule) -> None:
        services.schedule_delete(schedule=instance)

    @extend_schema(
        parameters=[SchedulePreviewQuerySerializer],
        responses=SchedulePreviewSerializer,
    )
    @action(detail=True, methods=["get"], url_path="preview")
    def preview(self, request: Request, pk: str | None = None) -> Response:
        """The next n fire times of this schedule (default 10, at most 1000)."""
        schedule = self.get_object()
        query = SchedulePreviewQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(
            _preview_answer(
                schedule.kind,
                schedule.expression,
                schedule.timezone,
                query.validated_data.get("after"),
                query.validated_data["n"],
                saved=schedule,
            )
        )

    @extend_schema(
        operation_id="schedules_preview_expression",
        parameters=[UnsavedPreviewQuerySerializer],
        responses=SchedulePreviewSerializer,
    )
    @action(detail=False, methods=["get"], url_path="preview")
    def preview_expression(self, request: Request) -> Response:
        """Fire times of an expression that is not saved yet (validates it too)."""
        query = UnsavedPreviewQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        validate_schedule_expression(data["kind"], data["expression"], data["timezone"])
        return Response(
            _preview_answer(
                data["kind"],
                data["expression"],
                data["timezone"],
                data.get("after"),
                data["n"],
            )
        )
