"""The claim and the end as prepared statements (PostgreSQL only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.test import override_settings
from django.utils import timezone

from jobs import pgsql
from jobs.models import Execution

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL's own statements"
)


def _prepared() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def _ended() -> dict[str, Any]:
    return {
        "status": Execution.Status.SUCCEEDED,
        "exit_code": 0,
        "output": "out",
        "error": "",
        "reason": "",
        "finished_at": timezone.now(),
    }


def test_it_prepares_the_claim_and_the_end_once_per_connection(
    make_execution: Callable[..., Execution],
) -> None:
    for _ in range(3):
        execution = pgsql.claim(
            execution_id=make_execution().pk, worker="w", now=timezone.now()
        )
        assert execution is not None
        ended = pgsql.finish(execution=execution, ended=_ended(), duration=0.5)
        assert ended is not None and ended.has_children is False
    claims = [sql for sql in _prepared() if "WITH claimed AS" in sql]
    ends = [sql for sql in _prepared() if "WITH ended AS" in sql]
    assert len(claims) == 1 and len(ends) == 1


@override_settings(KARMCHARI_PREPARED_STATEMENTS=False)
def test_it_sends_them_unprepared_when_told(
    make_execution: Callable[..., Execution],
) -> None:
    execution = pgsql.claim(
        execution_id=make_execution().pk, worker="w", now=timezone.now()
    )
    assert execution is not None
    ended = pgsql.finish(execution=execution, ended=_ended(), duration=0.5)
    assert ended is not None and ended.has_children is False
    assert not [sql for sql in _prepared() if "jobs_execution" in sql]
    execution.refresh_from_db()
    assert (execution.status, execution.output) == ("succeeded", "out")


def test_it_loads_the_claimed_run_as_the_orm_would(
    make_execution: Callable[..., Execution],
) -> None:
    made = make_execution(parameters={"n": 1})
    now = timezone.now()
    claimed = pgsql.claim(execution_id=made.pk, worker="w", now=now)
    assert claimed is not None
    stored = Execution.objects.select_related("job__app").get(pk=made.pk)
    for model in ("execution", "job", "app"):
        ours = {"execution": claimed, "job": claimed.job, "app": claimed.job.app}
        theirs = {"execution": stored, "job": stored.job, "app": stored.job.app}
        for field in type(theirs[model])._meta.concrete_fields:
            assert getattr(ours[model], field.attname) == getattr(
                theirs[model], field.attname
            ), (model, field.name)
    assert claimed.parameters == {"n": 1} and claimed.started_at == now
    assert claimed.job_has_secrets is False  # type: ignore[attr-defined]


def test_it_answers_none_and_false_when_the_run_is_not_there(
    make_execution: Callable[..., Execution],
) -> None:
    execution = make_execution()
    assert (
        pgsql.claim(execution_id=execution.pk + 1000, worker="w", now=timezone.now())
        is None
    )
    # Pending, never claimed: no end is recorded.
    assert pgsql.finish(execution=execution, ended=_ended(), duration=0.0) is None


@pytest.mark.django_db(transaction=True)
def test_it_raises_django_errors_when_the_connection_is_gone(
    make_execution: Callable[..., Execution],
) -> None:
    execution = make_execution()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    other = connection.get_new_connection(connection.get_connection_params())
    try:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()
    with pytest.raises(OperationalError):
        pgsql.claim(execution_id=execution.pk, worker="w", now=timezone.now())
    connection.close()


def test_it_inserts_a_run_as_the_orm_would(
    make_execution: Callable[..., Execution],
) -> None:
    job = make_execution().job
    ours = Execution(job=job, parameters={"a": [1, 2]}, dispatched_at=timezone.now())
    pgsql.insert(ours)
    theirs = Execution.objects.create(job=job, parameters={"a": [1, 2]})
    stored = Execution.objects.get(pk=ours.pk)
    assert not ours._state.adding and ours.created is not None
    for field in Execution._meta.concrete_fields:
        if field.name in ("id", "created", "dispatched_at"):
            continue
        assert getattr(stored, field.attname) == getattr(theirs, field.attname), field
    assert (stored.created, stored.dispatched_at) == (ours.created, ours.dispatched_at)
    assert [sql for sql in _prepared() if sql.startswith("INSERT INTO")]
