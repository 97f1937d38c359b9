"""Live output: Redis stream first, database chunks when Redis forgot."""

from __future__ import annotations

import json
from collections.abc import Callable

import jsonschema
import pytest
from django.test import override_settings
from django_redis import get_redis_connection
from rest_framework.test import APIClient

from jobs import logs
from jobs.models import Execution, ExecutionLogChunk

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


def test_the_api_answers_new_output_since_an_offset(
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


def test_the_stream_sends_output_then_the_end(
    api: APIClient, execution: Execution
) -> None:
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


def test_the_stream_resumes_from_the_last_event_id(
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


def test_external_reports_append_to_the_log(execution: Execution) -> None:
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
def test_the_download_says_where_the_output_was_cut(
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


def test_paging_a_finished_log_never_splits_a_character(execution: Execution) -> None:
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


def test_an_external_run_s_stream_expires_once_it_ends(
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


def test_the_stream_ignores_a_last_event_id_that_is_not_a_number(
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
