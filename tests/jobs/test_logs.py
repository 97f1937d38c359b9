"""Live output: Redis stream first, database chunks when Redis forgot."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from unittest import mock

import jsonschema
import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.contrib.auth.models import User
from django.db import OperationalError, connection
from django.test import override_settings
from django_redis import get_redis_connection
from rest_framework.test import APIClient

from jobs import logs
from jobs.models import Execution, ExecutionLogChunk
from karmchari_site.asgi import application as asgi_application
from tests.tokens import make_token

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def execution(make_execution: Callable[..., Execution]) -> Execution:
    execution = make_execution(status=Execution.Status.RUNNING)
    get_redis_connection("default").delete(logs.log_key(execution.pk))
    return execution


def finish(execution: Execution) -> None:
    Execution.objects.filter(pk=execution.pk).update(status=Execution.Status.SUCCEEDED)


def test_it_reads_live_output_from_an_offset(execution: Execution) -> None:
    writer = logs.LogWriter(execution.pk, clock=Clock())
    writer.write(b"hello ")
    writer.write(b"world\n")
    first = logs.log_read(execution=execution, offset=0)
    assert (first.data, first.offset, first.next_offset) == (b"hello world\n", 0, 12)
    assert not first.finished
    later = logs.log_read(execution=execution, offset=3)
    assert later.data == b"lo world\n"
    assert logs.log_read(execution=execution, offset=12).data == b""
    # Nothing reached the database yet: the flush interval has not passed.
    assert not ExecutionLogChunk.objects.exists()


def test_it_flushes_to_the_database_on_time_and_on_close(execution: Execution) -> None:
    clock = Clock()
    writer = logs.LogWriter(execution.pk, clock=clock)
    writer.write(b"one\n")
    clock.now += 1.5
    writer.write(b"two\n")
    assert ExecutionLogChunk.objects.count() == 1
    writer.write(b"three\n")
    writer.close()
    chunks = list(ExecutionLogChunk.objects.values_list("offset", "data"))
    assert [(o, bytes(d)) for o, d in chunks] == [(0, b"one\ntwo\n"), (8, b"three\n")]


def test_it_survives_redis_losing_the_stream(execution: Execution) -> None:
    writer = logs.LogWriter(execution.pk, clock=Clock())
    writer.write(b"persisted\n")
    writer.close()
    get_redis_connection("default").delete(logs.log_key(execution.pk))
    finish(execution)
    piece = logs.log_read(execution=execution, offset=4)
    assert piece.data == b"isted\n"
    assert piece.finished


def test_it_joins_the_database_head_and_the_live_tail(execution: Execution) -> None:
    clock = Clock()
    writer = logs.LogWriter(execution.pk, clock=clock)
    writer.write(b"old\n")
    writer.flush()
    writer.write(b"new\n")  # only in Redis so far
    redis = get_redis_connection("default")
    redis.xtrim(logs.log_key(execution.pk), minid="5-0")  # Redis lost "old"
    assert logs.log_read(execution=execution, offset=0).data == b"old\nnew\n"


@override_settings(KARMCHARI_OUTPUT_LIMIT=1024)
def test_it_keeps_only_the_capped_tail(execution: Execution) -> None:
    clock = Clock()
    writer = logs.LogWriter(execution.pk, clock=clock)
    for n in range(30):
        writer.write(f"{n:04d}".encode() * 25)  # 100 bytes
        clock.now += 2
        writer.flush_if_due()
    writer.close()
    get_redis_connection("default").delete(logs.log_key(execution.pk))
    piece = logs.log_read(execution=execution, offset=0)
    assert piece.offset > 0  # the head was dropped: reading resumes at what is kept
    assert piece.next_offset == 3000
    assert piece.data.endswith(b"0029" * 25)
    stored = sum(len(d) for d in ExecutionLogChunk.objects.values_list("data", flat=1))
    assert 1024 <= stored <= 1124


def test_it_never_splits_a_character(execution: Execution) -> None:
    writer = logs.LogWriter(execution.pk, clock=Clock())
    data = "naïve".encode()
    writer.write(data[:3])  # ends in the middle of "ï"
    piece = logs.log_read(execution=execution, offset=0)
    assert piece.data == b"na"
    writer.write(data[3:])
    assert logs.log_read(execution=execution, offset=2).text == "ïve"


def test_it_answers_new_output_since_an_offset_through_the_api(
    api: APIClient, execution: Execution
) -> None:
    logs.LogWriter(execution.pk, clock=Clock()).write(b"line 1\nline 2\n")
    body = api.get(f"/api/executions/{execution.pk}/log/?offset=7").json()
    assert body == {
        "offset": 7,
        "next_offset": 14,
        "text": "line 2\n",
        "finished": False,
        "status": "running",
    }
    assert api.get(f"/api/executions/{execution.pk}/log/?offset=-1").status_code == 400


def test_it_streams_output_then_the_end(api: APIClient, execution: Execution) -> None:
    published = api.get("/api/schema/", {"format": "json"}).json()
    stream = published["paths"]["/api/executions/{id}/log/stream/"]["get"]
    event_schema = stream["responses"]["200"]["content"]["text/event-stream"]["schema"]
    writer = logs.LogWriter(execution.pk, clock=Clock())
    writer.write(b"hello\n")
    writer.close()
    finish(execution)
    response = api.get(
        f"/api/executions/{execution.pk}/log/stream/",
        HTTP_ACCEPT="text/event-stream",
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    frames = b"".join(response.streaming_content).decode().split("\n\n")
    events = [
        dict(line.split(": ", 1) for line in f.splitlines()) for f in frames[1:-1]
    ]
    assert events[0]["event"] == "output"
    assert events[0]["id"] == "6"
    assert json.loads(events[0]["data"]) == {"offset": 0, "text": "hello\n"}
    assert events[1]["event"] == "end"
    assert json.loads(events[1]["data"]) == {"status": "succeeded", "next_offset": 6}
    # Each event is what the published schema says one is (found by the API fuzz).
    for event in events:
        jsonschema.validate(event, event_schema)


def test_it_resumes_the_stream_from_the_last_event_id(
    api: APIClient, execution: Execution
) -> None:
    logs.LogWriter(execution.pk, clock=Clock()).write(b"hello world\n")
    finish(execution)
    response = api.get(
        f"/api/executions/{execution.pk}/log/stream/",
        HTTP_ACCEPT="text/event-stream",
        HTTP_LAST_EVENT_ID="6",
    )
    text = b"".join(response.streaming_content).decode()
    assert '"text": "world\\n"' in text


@override_settings(KARMCHARI_LOG_STREAM_SECONDS=2)
def test_it_ends_the_stream_with_an_error_when_the_run_is_deleted(
    api: APIClient, execution: Execution
) -> None:
    """Its job deleted while it runs: the stream says so at once instead of
    sending keep-alives until KARMCHARI_LOG_STREAM_SECONDS."""
    logs.LogWriter(execution.pk, clock=Clock()).write(b"hello\n")
    response = api.get(
        f"/api/executions/{execution.pk}/log/stream/",
        HTTP_ACCEPT="text/event-stream",
    )
    frames = iter(response.streaming_content)
    assert next(frames) == b"retry: 1000\n\n"
    assert b"event: output" in next(frames)
    assert next(frames) == b": keep-alive\n\n"
    Execution.objects.filter(pk=execution.pk).delete()
    with mock.patch("jobs.engine_views._STREAM_POLL_SECONDS", 0):
        rest = list(frames)
    assert len(rest) == 1
    assert rest[0].startswith(b"event: error\n")
    data = rest[0].decode().split("data: ", 1)[1]
    assert json.loads(data) == {"detail": "No Execution matches the given query."}


def test_it_answers_404_when_the_run_is_deleted_during_a_read(
    api: APIClient, execution: Execution
) -> None:
    read = logs.log_read

    def read_then_delete(**kwargs: object) -> logs.LogSlice:
        piece = read(**kwargs)  # type: ignore[arg-type]
        Execution.objects.filter(pk=execution.pk).delete()
        return piece

    with mock.patch.object(logs, "log_read", read_then_delete):
        response = api.get(f"/api/executions/{execution.pk}/log/")
    assert response.status_code == 404
    assert response.json() == {"detail": "No Execution matches the given query."}


def test_it_appends_external_reports_to_the_log(execution: Execution) -> None:
    assert logs.log_append(execution_id=execution.pk, data=b"step 1\n") == 7
    assert logs.log_append(execution_id=execution.pk, data=b"step 2\n") == 14
    assert logs.log_read(execution=execution, offset=7).data == b"step 2\n"
    assert logs.log_tail_text(execution_id=execution.pk) == "step 1\nstep 2\n"


@override_settings(KARMCHARI_OUTPUT_LIMIT=2048)
def test_it_keeps_only_the_tail_of_a_report_over_the_cap(execution: Execution) -> None:
    assert logs.log_append(execution_id=execution.pk, data=b"x" * 5000) == 5000
    (chunk,) = ExecutionLogChunk.objects.filter(execution=execution)
    assert (chunk.offset, len(chunk.data)) == (5000 - 2048, 2048)
    assert logs.log_tail_text(execution_id=execution.pk) == (
        "[... 2952 bytes truncated ...]\n" + "x" * 2048
    )


@override_settings(KARMCHARI_OUTPUT_LIMIT=1024)
def test_it_says_in_the_download_where_the_output_was_cut(
    api: APIClient, execution: Execution
) -> None:
    writer = logs.LogWriter(execution.pk, clock=Clock())
    writer.write("é".encode() + b"a" * 1500)  # the cut falls inside nothing
    writer.write(b"".join(b"line %d\n" % n for n in range(200)))
    writer.close()
    finish(execution)
    text = api.get(f"/api/executions/{execution.pk}/output/").content.decode()
    assert text.startswith("[... ")
    assert " bytes truncated ...]\n" in text
    assert text.endswith("line 199\n")
    assert "\ufffd" not in text


def test_it_never_splits_a_character_when_paging_a_finished_log(
    execution: Execution,
) -> None:
    logs.LogWriter(execution.pk, clock=Clock()).write("é€…".encode())
    finish(execution)
    pieces, offset = [], 0
    while True:
        piece = logs.log_read(execution=execution, offset=offset, limit=4)
        pieces.append(piece.data)
        offset = piece.next_offset
        if piece.finished:
            break
    assert [p.decode() for p in pieces] == ["é", "€", "…"]


def test_it_expires_an_external_run_s_stream_once_the_run_ends(
    api: APIClient,
    make_job: Callable[..., Execution],
    django_capture_on_commit_callbacks: Callable,
) -> None:
    from jobs.models import Job

    job = make_job(kind=Job.Kind.EXTERNAL, spec={})
    run = api.post(f"/api/jobs/{job.pk}/run/").json()["id"]
    redis = get_redis_connection("default")
    with django_capture_on_commit_callbacks(execute=True):
        api.post(
            f"/api/executions/{run}/report/", {"status": "running", "output": "1\n"}
        )
    assert 0 < redis.ttl(logs.log_key(run)) <= 7 * 86400
    with django_capture_on_commit_callbacks(execute=True):
        api.post(f"/api/executions/{run}/report/", {"status": "succeeded"})
    from django.conf import settings

    assert 0 < redis.ttl(logs.log_key(run)) <= settings.KARMCHARI_LOG_REDIS_TTL


def test_it_ignores_a_stream_s_last_event_id_that_is_not_a_number(
    api: APIClient, execution: Execution
) -> None:
    logs.LogWriter(execution.pk, clock=Clock()).write(b"hello\n")
    finish(execution)
    response = api.get(
        f"/api/executions/{execution.pk}/log/stream/",
        HTTP_ACCEPT="text/event-stream",
        HTTP_LAST_EVENT_ID="²",
    )
    assert '"text": "hello\\n"' in b"".join(response.streaming_content).decode()


@override_settings(KARMCHARI_OUTPUT_LIMIT=1024)
def test_it_never_starts_a_trimmed_log_in_the_middle_of_a_character(
    api: APIClient, execution: Execution
) -> None:
    # A pipe read (and so a database chunk) can end inside a character.
    clock = Clock()
    writer = logs.LogWriter(execution.pk, clock=clock)
    e_acute = "é".encode()
    writer.write(b"x" + e_acute[:1])
    writer.flush()
    writer.write(e_acute[1:] + e_acute * 500)  # a chunk that starts mid-character
    writer.flush()
    writer.write(e_acute * 100)  # the first chunk falls out of the capped tail
    writer.close()
    get_redis_connection("default").delete(logs.log_key(execution.pk))  # Redis lost it
    finish(execution)
    body = api.get(f"/api/executions/{execution.pk}/log/?offset=0").json()
    assert body["offset"] > 0  # the head was dropped
    assert "\ufffd" not in body["text"]
    assert body["text"] == "é" * 600
    assert (body["offset"], body["next_offset"]) == (3, 1203)


def test_it_makes_progress_when_the_limit_is_smaller_than_a_character(
    api: APIClient, execution: Execution
) -> None:
    logs.LogWriter(execution.pk, clock=Clock()).write("é".encode())
    finish(execution)
    body = api.get(f"/api/executions/{execution.pk}/log/?offset=0&limit=1").json()
    # Polling with offset=next_offset must get somewhere: either the whole character
    # or at least a move forward; answering the same offset again loops forever.
    assert (body["next_offset"], body["finished"]) != (0, False)


def test_it_does_not_skip_output_when_redis_loses_the_stream_mid_run(
    execution: Execution,
) -> None:
    clock = Clock()
    writer = logs.LogWriter(execution.pk, clock=clock)
    got = bytearray()
    offset = 0

    def poll() -> logs.LogSlice:
        nonlocal offset
        piece = logs.log_read(execution=execution, offset=offset)
        got.extend(piece.data)
        offset = piece.next_offset
        return piece

    writer.write(b"a" * 10)
    writer.flush()  # in the database
    poll()
    writer.write(b"b" * 10)  # only in Redis until the next flush
    get_redis_connection("default").delete(logs.log_key(execution.pk))  # Redis lost it
    writer.write(b"c" * 10)  # streamed to a new, headless stream
    poll()
    writer.close()
    finish(execution)
    while not poll().finished:
        pass
    assert bytes(got) == b"a" * 10 + b"b" * 10 + b"c" * 10


@pytest.mark.django_db(transaction=True)
def test_it_stores_output_again_once_its_dead_connection_is_replaced(
    make_execution: Callable[..., Execution],
) -> None:
    execution = make_execution(status=Execution.Status.RUNNING)
    get_redis_connection("default").delete(logs.log_key(execution.pk))
    clock = Clock()
    writer = logs.LogWriter(execution.pk, clock=clock)
    writer.write(b"before\n")
    writer.flush()
    # The server drops the worker's connection mid-run (a failover,
    # pg_terminate_backend); the database itself is reachable again at once.
    connection.connection.close()
    try:
        for n in range(10):  # ten seconds of a job printing, flushed every second
            writer.write(b"line %d\n" % n)
            clock.now += 1.5
            writer.flush_if_due()
        writer.close()
    finally:
        connection.close()  # what execution_run's _with_reconnect does for the end
    stored = b"".join(
        bytes(d)
        for d in ExecutionLogChunk.objects.order_by("offset").values_list(
            "data", flat=True
        )
    )
    assert stored == b"before\n" + b"".join(b"line %d\n" % n for n in range(10))


@pytest.mark.django_db(transaction=True)
def test_it_stores_output_after_a_store_whose_answer_was_lost(
    make_execution: Callable[..., Execution],
) -> None:
    """The chunk's INSERT commits, then the connection drops before the answer
    comes back: the same offset again must not be refused for the rest of the run
    (the stored log, and the finished run's output, would stop there)."""
    execution = make_execution(status=Execution.Status.RUNNING)
    get_redis_connection("default").delete(logs.log_key(execution.pk))
    writer = logs.LogWriter(execution.pk, clock=Clock())
    writer.write(b"one\n")
    writer.flush()
    create = ExecutionLogChunk.objects.create
    calls: list[int] = []

    def commit_then_drop(**fields: object) -> ExecutionLogChunk:
        chunk = create(**fields)
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return chunk

    with mock.patch.object(ExecutionLogChunk.objects, "create", commit_then_drop):
        writer.write(b"two\n")
        writer.flush()
        writer.write(b"three\n")
        writer.close()
    assert logs.log_tail_text(execution_id=execution.pk) == "one\ntwo\nthree\n"
    assert list(ExecutionLogChunk.objects.values_list("offset", flat=True)) == [0, 4]


def test_it_expires_a_stream_restarted_after_redis_lost_it(
    make_execution: Callable[..., Execution],
) -> None:
    execution = make_execution(status=Execution.Status.RUNNING)
    redis = get_redis_connection("default")
    key = logs.log_key(execution.pk)
    redis.delete(key)
    writer = logs.LogWriter(execution.pk, clock=Clock())
    writer.write(b"before\n")
    assert redis.ttl(key) > 0
    redis.delete(key)  # Redis restarted while the job runs
    writer.write(b"after\n")
    assert redis.exists(key)
    # The worker may die before close(): the key must not live forever.
    assert redis.ttl(key) > 0


def test_it_answers_download_errors_as_json(
    make_user: Callable[..., User], make_execution: Callable[..., Execution]
) -> None:
    execution = make_execution(status=Execution.Status.SUCCEEDED)
    client = APIClient()  # like curl: Accept */*
    client.force_authenticate(make_user())  # no jobs.view_execution
    response = client.get(f"/api/executions/{execution.pk}/output/")
    assert response.status_code == 403
    # Not the Python repr of the error dict, "{'detail': ErrorDetail(string=...)}".
    assert "ErrorDetail" not in response.content.decode()
    assert response["Content-Type"].startswith("application/json")
    assert "detail" in response.json()


async def _first_frames(path: str, token: str) -> tuple[list[bytes], float]:
    """The frames an ASGI server (uvicorn, in production) gets from the stream
    before it ends, and seconds from the request to the first output event."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"accept", b"text/event-stream"),
            (b"authorization", f"Token {token}".encode()),
        ],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
    }
    communicator = ApplicationCommunicator(asgi_application, scope)
    began = time.monotonic()
    await communicator.send_input({"type": "http.request", "body": b""})
    assert (await communicator.receive_output(5))["status"] == 200
    frames: list[bytes] = []
    first_output = None
    while first_output is None:
        frames.append((await communicator.receive_output(5))["body"])
        if frames[-1].find(b"event: output") >= 0:
            first_output = time.monotonic() - began
    await communicator.wait(10)
    return frames, first_output


@pytest.mark.django_db(transaction=True)
@override_settings(KARMCHARI_LOG_STREAM_SECONDS=3.0)
def test_it_streams_output_as_it_comes_under_asgi(
    admin_user: User, make_execution: Callable[..., Execution]
) -> None:
    execution = make_execution(status=Execution.Status.RUNNING)
    get_redis_connection("default").delete(logs.log_key(execution.pk))
    logs.LogWriter(execution.pk, clock=Clock()).write(b"hello\n")

    frames, first_output = async_to_sync(_first_frames)(
        f"/api/executions/{execution.pk}/log/stream/", make_token(admin_user).key
    )

    assert frames[0] == b"retry: 1000\n\n"
    assert b'"text": "hello\\n"' in frames[-1]
    # Sent at once, not all together when the stream closes 3 s later.
    assert first_output < 2.0


def _write_with_redis_away(writer: logs.LogWriter, data: bytes) -> None:
    with mock.patch(
        "jobs.logs.get_redis_connection", side_effect=ConnectionError("Redis away")
    ):
        writer.write(data)


def _read_all(api: APIClient, execution: Execution) -> tuple[bytes, bool]:
    got = bytearray()
    offset = 0
    for _ in range(20):
        body = api.get(f"/api/executions/{execution.pk}/log/?offset={offset}").json()
        got += body["text"].encode()
        offset = body["next_offset"]
        if body["finished"]:
            return bytes(got), True
    return bytes(got), False


def test_it_reads_the_whole_log_of_a_run_whose_tail_missed_redis(
    api: APIClient, execution: Execution
) -> None:
    """Redis could not take the end of a run's output (it was away for a moment);
    the worker stored all of it in the database before recording the end. A client
    reading the finished run's log from the start must get all of it before
    `finished` says nothing is left."""
    clock = Clock()
    writer = logs.LogWriter(execution.pk, clock=clock)
    writer.write(b"streamed\n")
    _write_with_redis_away(writer, b"only in the database\n")
    writer.close()
    Execution.objects.filter(pk=execution.pk).update(status=Execution.Status.SUCCEEDED)
    text, finished = _read_all(api, execution)
    assert finished
    assert text == b"streamed\nonly in the database\n"


def test_it_reads_past_a_hole_in_the_stream_of_a_finished_run(
    api: APIClient, execution: Execution
) -> None:
    """Redis missed a piece in the middle (the writer waits a few seconds before
    trying Redis again); the rest was streamed. The finished run's log, read from
    the start, must not stop at the hole and say it is finished."""
    clock = Clock()
    writer = logs.LogWriter(execution.pk, clock=clock)
    writer.write(b"one\n")
    _write_with_redis_away(writer, b"two\n")
    clock.now += 10  # past the writer's wait before trying Redis again
    writer.write(b"three\n")
    writer.close()
    Execution.objects.filter(pk=execution.pk).update(status=Execution.Status.SUCCEEDED)
    text, finished = _read_all(api, execution)
    assert finished
    assert text == b"one\ntwo\nthree\n"


def test_it_tells_an_event_source_reconnecting_after_the_end_to_stop(
    api: APIClient, execution: Execution
) -> None:
    """HTML's server-sent events: a 204 stops an EventSource, which would otherwise
    reconnect every `retry` after the end and be sent `end` again for ever."""
    logs.LogWriter(execution.pk, clock=Clock()).write(b"hello\n")
    path = f"/api/executions/{execution.pk}/log/stream/"
    running = api.get(path, HTTP_ACCEPT="text/event-stream", HTTP_LAST_EVENT_ID="6")
    assert running.status_code == 200  # still running: the stream waits for more
    finish(execution)

    after_end = api.get(path, HTTP_ACCEPT="text/event-stream", HTTP_LAST_EVENT_ID="6")
    assert after_end.status_code == 204
    # A new stream (no Last-Event-ID) is the whole log and its end, as before.
    first = api.get(path, HTTP_ACCEPT="text/event-stream")
    assert b"event: end" in b"".join(first.streaming_content)
