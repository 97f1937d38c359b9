"""The claim and the end of a run as one statement each, on PostgreSQL.

These two writes are on the path of every run. Through the ORM each is a transaction
of several statements (BEGIN, the execution's UPDATE, a read, the job's UPDATE,
COMMIT), a round trip apiece, while the job's row stays locked; here each is a single
statement with data-modifying CTEs, atomic on its own (bench/dispatch.py: no-op
executions 192/s before, 324/s after; docs/benchmarks.md). jobs.services uses these on
PostgreSQL and the ORM elsewhere, with the same conditions and results.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar, cast

from django.db import connection
from django.db.models import Field, Model

from agents.models import Agent
from jobs.models import App, Execution, Job, JobSecret

M = TypeVar("M", bound=Model)


def _fields(model: type[Model]) -> list[Field[Any, Any]]:
    return list(model._meta.concrete_fields)


def _names(table: str, fields: list[Field[Any, Any]]) -> str:
    quote = connection.ops.quote_name
    return ", ".join(f"{quote(table)}.{quote(field.column)}" for field in fields)


def _instance(model: type[M], fields: list[Field[Any, Any]], values: Any) -> M:
    """A model instance from raw column values, converted as the ORM would."""
    converted = []
    for field, value in zip(fields, values, strict=True):
        column = field.get_col(model._meta.db_table)
        for converter in [
            *connection.ops.get_db_converters(column),
            *cast(Any, field).get_db_converters(connection),
        ]:
            value = converter(value, column, connection)
        converted.append(value)
    return model.from_db(connection.alias, [f.attname for f in fields], converted)


def claim(*, execution_id: int, worker: str, now: datetime) -> Execution | None:
    """services.execution_claim in one statement: the execution (with its job and
    app loaded, and whether the job has dependants and secrets) or None."""
    quote = connection.ops.quote_name
    execution_fields, job_fields, app_fields = (
        _fields(Execution),
        _fields(Job),
        _fields(App),
    )
    executions, jobs, apps = (
        quote(Execution._meta.db_table),
        quote(Job._meta.db_table),
        quote(App._meta.db_table),
    )
    links = quote(Job.parents.through._meta.db_table)
    secrets = quote(JobSecret._meta.db_table)
    # Only names from the models' metadata are formatted in; values are parameters.
    sql = f"""
        WITH claimed AS (
            UPDATE {executions}
            SET status = %s, started_at = %s, worker = %s,
                agent_id = (
                    SELECT id FROM {quote(Agent._meta.db_table)} WHERE name = %s
                    LIMIT 1
                )
            WHERE id = %s AND (
                status = %s OR (status = %s AND worker = %s AND started_at = %s)
            )
            RETURNING {_names(Execution._meta.db_table, execution_fields)}
        ), touched AS (
            UPDATE {jobs} SET last_attempted_at = %s
            FROM claimed WHERE {jobs}.id = claimed.job_id
            RETURNING {_names(Job._meta.db_table, job_fields)}
        )
        SELECT {_names("claimed", execution_fields)},
            {_names("touched", job_fields)},
            {_names(App._meta.db_table, app_fields)},
            EXISTS (SELECT 1 FROM {links} WHERE to_job_id = touched.id),
            EXISTS (SELECT 1 FROM {secrets} WHERE job_id = touched.id)
        FROM claimed
        JOIN touched ON touched.id = claimed.job_id
        JOIN {apps} ON {apps}.id = touched.app_id
    """  # noqa: S608
    running, pending = Execution.Status.RUNNING, Execution.Status.PENDING
    params: list[Any] = [
        *(running, now, worker, worker, execution_id),
        *(pending, running, worker, now, now),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    first_job = len(execution_fields)
    first_app = first_job + len(job_fields)
    execution = _instance(Execution, execution_fields, row[:first_job])
    job = _instance(Job, job_fields, row[first_job:first_app])
    job.app = _instance(App, app_fields, row[first_app:-2])
    execution.job = job
    execution.job_has_children, execution.job_has_secrets = row[-2:]  # type: ignore[attr-defined]
    return execution


def finish(*, execution: Execution, ended: dict[str, Any], duration: float) -> bool:
    """services.execution_finish's writes in one statement: `ended` on the execution
    if it is still running or paused, and the run folded into its job's counters.
    False when the execution was no longer running."""
    quote = connection.ops.quote_name
    executions, jobs = quote(Execution._meta.db_table), quote(Job._meta.db_table)
    columns = {field.name: field.column for field in _fields(Execution)}
    assignments = ", ".join(f"{quote(columns[name])} = %s" for name in ended)
    succeeded = ended["status"] == Execution.Status.SUCCEEDED
    sql = f"""
        WITH ended AS (
            UPDATE {executions} SET {assignments}
            WHERE id = %s AND status IN (%s, %s)
            RETURNING job_id
        )
        UPDATE {jobs} SET
            duration_total = duration_total + %s,
            success_count = success_count + %s,
            error_count = error_count + %s,
            last_success_at = CASE WHEN %s THEN %s ELSE last_success_at END,
            last_error_at = CASE WHEN %s THEN last_error_at ELSE %s END
        FROM ended WHERE {jobs}.id = ended.job_id
    """  # noqa: S608
    finished_at = ended["finished_at"]
    params: list[Any] = [
        *ended.values(),
        execution.pk,
        Execution.Status.RUNNING,
        Execution.Status.PAUSED,
        duration,
        int(succeeded),
        int(not succeeded),
        succeeded,
        finished_at,
        succeeded,
        finished_at,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return bool(cursor.rowcount)
