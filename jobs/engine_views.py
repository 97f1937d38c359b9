"""API of the execution engine: control verbs, live log, external reports, stats.

Mixed into the viewsets of jobs/views.py (ExecutionViewSet, JobViewSet); each verb
validates, calls one service and presents the result.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import close_old_connections
from django.db.models.query import QuerySet
from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs import access, logs, services, stats
from jobs.models import Execution, Job
from jobs.serializers import (
    ExecutionDetailSerializer,
    ExecutionReportSerializer,
    ExecutionSerializer,
    GlobalStatsSerializer,
    JobStatsDetailSerializer,
    LogQuerySerializer,
    LogSliceSerializer,
)

# Seconds between reads of the log while an SSE stream is open.
_STREAM_POLL_SECONDS = 0.25


class EventStreamRenderer(BaseRenderer):
    """Lets `Accept: text/event-stream` through content negotiation; errors are sent
    as one `error` event."""

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        return f"event: error\ndata: {json.dumps(data, default=str)}\n\n".encode()


# One Server-Sent Event of the log stream (before OpenAPI 3.2 and its `itemSchema`,
# an event stream's `schema` describes each event).
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["output", "end", "error"]},
        "data": {
            "type": "string",
            "description": "JSON: `output` {offset, text}; `end` {status, "
            "next_offset}; `error` the API's error body.",
        },
        "id": {
            "type": "string",
            "description": "The next offset: sent back as Last-Event-ID, it resumes "
            "the stream there.",
        },
        "retry": {"type": "integer", "minimum": 0},
    },
    "required": ["event", "data"],
}


_GONE = "No Execution matches the given query."


def _status_now(execution: Execution) -> str | None:
    """The run's status as the database has it now; None once it is deleted."""
    status: str | None = (
        Execution.objects.filter(pk=execution.pk)
        .values_list("status", flat=True)
        .first()
    )
    return status


def _slice_answer(execution: Execution, piece: logs.LogSlice) -> dict[str, Any]:
    return {
        "offset": piece.offset,
        "next_offset": piece.next_offset,
        "text": piece.text,
        "finished": piece.finished,
        "status": execution.status,
    }


class _LogEvents:
    """SSE frames of one run's log: `output` events with the new text, then one `end`
    event. The event id is the next offset, so an EventSource that reconnects
    (Last-Event-ID) resumes where it stopped. `step()` reads once; `_events` drives
    it for WSGI and `_async_events` for ASGI, which would otherwise read a
    synchronous stream to its end before sending any of it."""

    AGAIN, WAIT, STOP = "again", "wait", "stop"

    def __init__(self, execution: Execution, offset: int, limit: int) -> None:
        self.execution, self.offset, self.limit = execution, offset, limit
        self.stop_at = time.monotonic() + settings.KARMCHARI_LOG_STREAM_SECONDS

    def step(self) -> tuple[list[bytes], str]:
        """The frames of one read, and what next: read again at once, after a
        pause, or stop."""
        piece = logs.log_read(
            execution=self.execution, offset=self.offset, limit=self.limit
        )
        frames = []
        if piece.data:
            self.offset = piece.next_offset
            body = json.dumps({"offset": piece.offset, "text": piece.text})
            frames.append(f"id: {self.offset}\nevent: output\ndata: {body}\n\n")
        then = self.AGAIN if piece.data else self.WAIT
        if piece.finished:
            status = _status_now(self.execution)
            if status is None:
                # Deleted while streamed: say so rather than keep the stream
                # open on keep-alives until KARMCHARI_LOG_STREAM_SECONDS.
                gone = json.dumps({"detail": _GONE})
                frames.append(f"event: error\ndata: {gone}\n\n")
            else:
                end = json.dumps({"status": status, "next_offset": self.offset})
                frames.append(f"id: {self.offset}\nevent: end\ndata: {end}\n\n")
            then = self.STOP
        elif time.monotonic() >= self.stop_at:
            then = self.STOP
        elif then == self.WAIT:
            frames.append(": keep-alive\n\n")
        return [frame.encode() for frame in frames], then


_RETRY_FRAME = b"retry: 1000\n\n"


def _events(stream: _LogEvents) -> Iterator[bytes]:
    yield _RETRY_FRAME
    try:
        while True:
            frames, then = stream.step()
            yield from frames
            if then == stream.STOP:
                return
            if then == stream.WAIT:
                time.sleep(_STREAM_POLL_SECONDS)
    finally:
        # The response outlives the view: give its connection back.
        close_old_connections()


async def _async_events(stream: _LogEvents) -> AsyncIterator[bytes]:
    yield _RETRY_FRAME
    step = sync_to_async(stream.step)
    try:
        while True:
            frames, then = await step()
            for frame in frames:
                yield frame
            if then == stream.STOP:
                return
            if then == stream.WAIT:
                await asyncio.sleep(_STREAM_POLL_SECONDS)
    finally:
        await sync_to_async(close_old_connections)()


class ExecutionEngineActions:
    """pause, resume, kill, retry, report, log and log/stream on executions."""

    action_permissions = {
        "pause": ["jobs.change_execution"],
        "resume": ["jobs.change_execution"],
        "kill": ["jobs.change_execution"],
        "report": ["jobs.change_execution"],
        "retry": ["jobs.add_execution"],
    }

    def get_queryset(self) -> QuerySet[Execution]:
        queryset: QuerySet[Execution] = super().get_queryset()  # type: ignore[misc]
        if getattr(self, "action", None) == "retrieve":
            queryset = queryset.prefetch_related("events__actor")
        return queryset

    def _execution(self) -> Execution:
        execution: Execution = self.get_object()  # type: ignore[attr-defined]
        return execution

    def _control(self, request: Request, verb: str) -> Response:
        execution = services.execution_control(
            execution=self._execution(), action=verb, user=request.user
        )
        return Response(
            ExecutionDetailSerializer(execution).data, status=status.HTTP_202_ACCEPTED
        )

    @extend_schema(
        request=None,
        responses={
            202: ExecutionDetailSerializer,
            409: OpenApiResponse(description="Finished, or its kind cannot pause."),
        },
    )
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str | None = None) -> Response:
        """Stop the run where it is (SIGSTOP to its process group)."""
        return self._control(request, "pause")

    @extend_schema(
        request=None,
        responses={
            202: ExecutionDetailSerializer,
            409: OpenApiResponse(description="Not paused, or finished."),
        },
    )
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        """Continue a paused run (SIGCONT)."""
        return self._control(request, "resume")

    @extend_schema(
        request=None,
        responses={
            202: ExecutionDetailSerializer,
            409: OpenApiResponse(description="Already finished."),
        },
    )
    @action(detail=True, methods=["post"])
    def kill(self, request: Request, pk: str | None = None) -> Response:
        """SIGTERM, then SIGKILL after KARMCHARI_KILL_GRACE; a pending run never
        starts."""
        return self._control(request, "kill")

    @extend_schema(
        request=None,
        responses={
            202: ExecutionSerializer,
            409: OpenApiResponse(description="Still running, or the job is disabled."),
        },
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        """Run a finished execution again now, as its next attempt."""
        retry = services.execution_retry(execution=self._execution(), user=request.user)
        return Response(
            ExecutionSerializer(retry).data, status=status.HTTP_202_ACCEPTED
        )

    @extend_schema(
        request=ExecutionReportSerializer,
        responses={
            200: ExecutionDetailSerializer,
            409: OpenApiResponse(description="Finished, or not an external job."),
        },
    )
    @action(detail=True, methods=["post"])
    def report(self, request: Request, pk: str | None = None) -> Response:
        """For the process of an external job: report progress (running/paused plus
        output) or the end. Read `desired_state` from the execution to obey
        pause/kill."""
        execution = self._execution()
        body = ExecutionReportSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        execution = services.execution_report(
            execution=execution, user=request.user, **body.validated_data
        )
        return Response(ExecutionDetailSerializer(execution).data)

    @extend_schema(parameters=[LogQuerySerializer], responses=LogSliceSerializer)
    @action(detail=True, methods=["get"])
    def log(self, request: Request, pk: str | None = None) -> Response:
        """Output since byte `offset` (stdout and stderr interleaved), live while the
        run goes on. Poll with `offset=next_offset` until `finished`."""
        execution = self._execution()
        query = LogQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        piece = logs.log_read(execution=execution, **query.validated_data)
        status = _status_now(execution)
        if status is None:
            raise NotFound(_GONE)  # deleted meanwhile (its job was, or retention)
        execution.status = status
        return Response(_slice_answer(execution, piece))

    @extend_schema(
        parameters=[LogQuerySerializer],
        responses={
            (200, "text/event-stream"): SSE_EVENT_SCHEMA,
            204: OpenApiResponse(
                description="A reconnect (Last-Event-ID) past the end of a finished "
                "run: nothing more will come; an EventSource stops."
            ),
        },
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="log/stream",
        renderer_classes=[EventStreamRenderer, JSONRenderer],
    )
    def log_stream(self, request: Request, pk: str | None = None) -> Any:
        """Server-Sent Events: `output` events ({offset, text}) as the run writes,
        then `end` ({status}). Reconnecting with Last-Event-ID resumes; past the
        end of a finished run it answers 204, which stops an EventSource."""
        execution = self._execution()
        query = LogQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        offset = query.validated_data["offset"]
        last_id = request.headers.get("Last-Event-ID", "")
        if last_id.isascii() and last_id.isdigit() and len(last_id) <= 18:
            offset = int(last_id)
            # A reconnect after the end: 204 tells an EventSource to stop (HTML's
            # server-sent events), where a new stream would send `end` again and
            # the browser would reconnect every `retry` for ever.
            piece = logs.log_read(execution=execution, offset=offset, limit=4)
            if piece.finished and not piece.data:
                return HttpResponse(status=204)
        stream = _LogEvents(execution, offset, query.validated_data["limit"])
        response = StreamingHttpResponse(
            _async_events(stream)
            if isinstance(request._request, ASGIRequest)
            else _events(stream),
            content_type="text/event-stream",
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response


class JobEngineActions:
    @extend_schema(responses=JobStatsDetailSerializer)
    @action(detail=True, methods=["get"], url_path="stats")
    def job_stats(self, request: Request, pk: str | None = None) -> Response:
        """Counts and timings of this job's runs (cached; refreshed on change)."""
        job: Job = self.get_object()  # type: ignore[attr-defined]
        return Response(JobStatsDetailSerializer(stats.stats_job(job=job)).data)


class StatsView(APIView):
    """Totals over all jobs (cached; refreshed on change); with per-app access, over
    the jobs of the caller's apps (computed on each call)."""

    # For the model permission check: reading stats needs jobs.view_job.
    queryset = Job.objects.all()

    @extend_schema(responses=GlobalStatsSerializer)
    def get(self, request: Request) -> Response:
        figures = stats.stats_global(apps=access.scope(request.user))
        return Response(GlobalStatsSerializer(figures).data)
