"""The claim and the end of a run as one prepared statement each, on PostgreSQL.

These two writes are on the path of every run. Through the ORM each is a transaction
of several statements (BEGIN, the execution's UPDATE, a read, the job's UPDATE,
COMMIT), a round trip apiece, while the job's row stays locked; here each is a single
statement with data-modifying CTEs, atomic on its own. The statements are built once
per process and prepared once per connection (server-side binding), so PostgreSQL
parses and plans each only once, and the rows come back converted by converters
looked up once (bench/dispatch.py figures in docs/benchmarks.md).
`KARMCHARI_PREPARED_STATEMENTS = False` sends them unprepared (a connection pooler
older than PgBouncer 1.21 in transaction mode). jobs.services uses these on
PostgreSQL and the ORM elsewhere, with the same conditions and results.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar, cast

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model

from agents.models import Agent
from jobs.models import App, Execution, Job, JobSecret

M = TypeVar("M", bound=Model)

# psycopg prepares a statement by itself after this many runs: never, here.
_NEVER = 2**31 - 1


def _quote(name: str) -> str:
    return connection.ops.quote_name(name)


@functools.cache
def _shape(model: type[Model]) -> tuple[list[Field[Any, Any]], list[str], list[Any]]:
    """A model's concrete fields, their attribute names and, per field, its column
    and the converters the ORM would apply to its raw values (looked up once)."""
    fields = list(model._meta.concrete_fields)
    conversions = []
    for field in fields:
        column = field.get_col(model._meta.db_table)
        converters = [
            *connection.ops.get_db_converters(column),
            *cast(Any, field).get_db_converters(connection),
        ]
        conversions.append((column, converters))
    return fields, [field.attname for field in fields], conversions


def _names(table: str, model: type[Model]) -> str:
    return ", ".join(f"{_quote(table)}.{_quote(f.column)}" for f in _shape(model)[0])


def _db() -> BaseDatabaseWrapper:
    """The default connection itself, looked up once per call: every attribute read
    through the `django.db.connection` proxy is a context-local lookup."""
    return connections[DEFAULT_DB_ALIAS]


def _instance(db: BaseDatabaseWrapper, model: type[M], values: Sequence[Any]) -> M:
    """A model instance from raw column values, converted as the ORM would."""
    _, attnames, conversions = _shape(model)
    converted = []
    for value, (column, converters) in zip(values, conversions, strict=True):
        for converter in converters:
            value = converter(value, column, db)
        converted.append(value)
    return model.from_db(db.alias, attnames, converted)


def _execute(
    sql: str, params: Mapping[str, Any] | Sequence[Any], *, fetch: bool
) -> Any:
    """One statement on Django's connection, prepared unless the setting says not:
    the row when `fetch`, else the number of rows it changed. Errors surface as
    django.db exceptions, as through a Django cursor."""
    import psycopg

    prepare = bool(settings.KARMCHARI_PREPARED_STATEMENTS)
    db = _db()
    with db.wrap_database_errors:
        db.ensure_connection()
        db.validate_no_broken_transaction()
        raw = db.connection
        if prepare and raw.prepare_threshold is None:
            # Django turns psycopg's automatic preparing off; psycopg then ignores
            # prepare=True too. A threshold never reached prepares only these.
            raw.prepare_threshold = _NEVER
        with psycopg.Cursor(raw) as cursor:
            cursor.execute(sql, params, prepare=prepare)
            return cursor.fetchone() if fetch else cursor.rowcount


@functools.cache
def _claim_sql() -> str:
    executions, jobs, apps = (
        _quote(Execution._meta.db_table),
        _quote(Job._meta.db_table),
        _quote(App._meta.db_table),
    )
    secrets = _quote(JobSecret._meta.db_table)
    agents = _quote(Agent._meta.db_table)
    # Only names from the models' metadata are formatted in; values are parameters.
    return f"""
        WITH claimed AS (
            UPDATE {executions}
            SET status = %(running)s, started_at = %(now)s, worker = %(worker)s,
                agent_id = (
                    SELECT id FROM {agents} WHERE name = %(worker)s LIMIT 1
                )
            WHERE id = %(id)s AND (
                (status = %(pending)s AND EXISTS (
                    SELECT 1 FROM {jobs} WHERE {jobs}.id = {executions}.job_id
                    AND {jobs}.enabled
                ))
                OR (status = %(running)s AND worker = %(worker)s
                    AND started_at = %(now)s)
            )
            RETURNING {_names(Execution._meta.db_table, Execution)}
        ), touched AS (
            UPDATE {jobs} SET last_attempted_at = %(now)s
            FROM claimed WHERE {jobs}.id = claimed.job_id
            RETURNING {_names(Job._meta.db_table, Job)}
        )
        SELECT {_names("claimed", Execution)},
            {_names("touched", Job)},
            {_names(App._meta.db_table, App)},
            EXISTS (SELECT 1 FROM {secrets} WHERE job_id = touched.id)
        FROM claimed
        JOIN touched ON touched.id = claimed.job_id
        JOIN {apps} ON {apps}.id = touched.app_id
    """  # noqa: S608


def claim(*, execution_id: int, worker: str, now: datetime) -> Execution | None:
    """services.execution_claim in one statement: the execution (with its job and
    app loaded, and whether the job has secrets) or None."""
    row = _execute(
        _claim_sql(),
        {
            "running": Execution.Status.RUNNING.value,
            "pending": Execution.Status.PENDING.value,
            "now": now,
            "worker": worker,
            "id": execution_id,
        },
        fetch=True,
    )
    if row is None:
        return None
    first_job = len(_shape(Execution)[0])
    first_app = first_job + len(_shape(Job)[0])
    db = _db()
    execution = _instance(db, Execution, row[:first_job])
    job = _instance(db, Job, row[first_job:first_app])
    job.app = _instance(db, App, row[first_app:-1])
    execution.job = job
    execution.job_has_secrets = row[-1]  # type: ignore[attr-defined]
    return execution


@functools.cache
def _finish_sql(names: tuple[str, ...]) -> str:
    columns = {field.name: field.column for field in _shape(Execution)[0]}
    executions, jobs = _quote(Execution._meta.db_table), _quote(Job._meta.db_table)
    links = _quote(Job.parents.through._meta.db_table)
    assignments = ", ".join(f"{_quote(columns[name])} = %({name})s" for name in names)
    return f"""
        WITH ended AS (
            UPDATE {executions} SET {assignments}
            WHERE id = %(id)s AND status IN (%(running)s, %(paused)s)
            RETURNING job_id
        )
        UPDATE {jobs} SET
            duration_total = duration_total + %(duration)s,
            success_count = success_count + %(successes)s,
            error_count = error_count + %(errors)s,
            last_success_at = CASE WHEN %(succeeded)s THEN %(finished_at)s
                ELSE last_success_at END,
            last_error_at = CASE WHEN %(succeeded)s THEN last_error_at
                ELSE %(finished_at)s END
        FROM ended WHERE {jobs}.id = ended.job_id
        RETURNING EXISTS (SELECT 1 FROM {links} WHERE to_job_id = {jobs}.id),
            {jobs}.{_quote(Job._meta.get_field("overlap_policy").column)}
    """  # noqa: S608


class Ended(NamedTuple):
    """What a recorded end answers about its job as it is now, not as the claim
    loaded it: what follows the end goes by these."""

    has_children: bool  # one linked while the run went counts
    overlap_policy: str  # one changed while the run went counts


def finish(
    *, execution: Execution, ended: dict[str, Any], duration: float
) -> Ended | None:
    """services.execution_finish's writes in one statement: `ended` on the execution
    if it is still running or paused, and the run folded into its job's counters.
    None when the execution was no longer running; else the job as it is now
    (read from the row the statement wrote, so no query more)."""
    succeeded = ended["status"] == Execution.Status.SUCCEEDED
    params = {
        **ended,
        "id": execution.pk,
        "running": Execution.Status.RUNNING.value,
        "paused": Execution.Status.PAUSED.value,
        "duration": float(duration),
        "successes": int(succeeded),
        "errors": int(not succeeded),
        "succeeded": succeeded,
    }
    row = _execute(_finish_sql(tuple(ended)), params, fetch=True)
    return None if row is None else Ended(bool(row[0]), row[1])


def _insert_fields(model: type[Model]) -> list[Field[Any, Any]]:
    return [field for field in _shape(model)[0] if not field.primary_key]


@functools.cache
def _insert_sql(model: type[Model]) -> str:
    fields = _insert_fields(model)
    columns = ", ".join(_quote(field.column) for field in fields)
    values = ", ".join(["%s"] * len(fields))
    return (
        f"INSERT INTO {_quote(model._meta.db_table)} ({columns}) VALUES ({values}) "  # noqa: S608
        f"RETURNING {_quote(model._meta.pk.column)}"
    )


def insert(instance: Model) -> None:
    """`instance.save()` of a new row as one prepared statement (the trigger's,
    on the path of every run): fields prepared as the ORM would, the pk set."""
    db = _db()
    fields = _insert_fields(type(instance))
    values = [
        field.get_db_prep_save(field.pre_save(instance, True), db) for field in fields
    ]
    (instance.pk,) = _execute(_insert_sql(type(instance)), values, fetch=True)
    instance._state.adding = False
    instance._state.db = db.alias
