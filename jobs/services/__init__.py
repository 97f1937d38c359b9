"""Every write with side effects. Views, tasks and admin actions call these.

One module per room; callers use the names re-exported here
(``from jobs import services``; ``services.job_trigger(...)``). Tests that replace
a name the code looks up patch it where it is used, e.g.
``jobs.services.executions.get_runner``.
"""

from jobs.services.apps import (
    app_create,
    app_grant_creator,
    app_set_access,
    app_update,
)
from jobs.services.base import (
    Conflict,
    DependencyCycle,
    Gone,
    ServiceError,
)
from jobs.services.commands import (
    execution_control,
    execution_report,
    execution_retry,
    external_paused_seconds,
    job_secret_values,
)
from jobs.services.compat import (
    app_get_or_create,
    job_create_scheduled,
    job_get_or_create,
    job_schedule_set,
    job_schedules_delete,
    job_schedules_enable,
    job_trigger_tagged,
)
from jobs.services.executions import (
    execution_claim,
    execution_finish,
    execution_run,
    execution_runner_status,
    execution_schedule_retry,
    external_open,
    job_trigger,
    retry_delay,
)
from jobs.services.jobs import (
    job_children_cycle,
    job_clean_spec,
    job_create,
    job_delete,
    job_insert,
    job_parents_cycle,
    job_set_children,
    job_set_parents,
    job_update,
    jobs_delete,
    jobs_doomed,
)
from jobs.services.outbox import (
    execution_resend_stale,
    execution_send,
    executions_send,
)
from jobs.services.overlap import (
    execution_kill_active,
    execution_release_buffered,
)
from jobs.services.schedules import (
    MAX_SCHEDULE_DELAY,
    SCHEDULE_CHANNEL,
    ScheduleInvalid,
    schedule_check,
    schedule_check_delay,
    schedule_check_expression,
    schedule_check_moment,
    schedule_create,
    schedule_delete,
    schedule_next_due,
    schedule_next_run,
    schedule_parse,
    schedule_save,
    schedule_upcoming,
    schedule_update,
    schedules_fire_due,
)

__all__ = [
    "MAX_SCHEDULE_DELAY",
    "SCHEDULE_CHANNEL",
    "Conflict",
    "DependencyCycle",
    "Gone",
    "ScheduleInvalid",
    "ServiceError",
    "app_create",
    "app_get_or_create",
    "app_grant_creator",
    "app_set_access",
    "app_update",
    "execution_claim",
    "execution_control",
    "execution_finish",
    "execution_kill_active",
    "execution_release_buffered",
    "execution_report",
    "execution_resend_stale",
    "execution_retry",
    "execution_run",
    "execution_runner_status",
    "execution_schedule_retry",
    "execution_send",
    "executions_send",
    "external_open",
    "external_paused_seconds",
    "job_children_cycle",
    "job_clean_spec",
    "job_create",
    "job_create_scheduled",
    "job_delete",
    "job_get_or_create",
    "job_insert",
    "job_parents_cycle",
    "job_schedule_set",
    "job_schedules_delete",
    "job_schedules_enable",
    "job_secret_values",
    "job_set_children",
    "job_set_parents",
    "job_trigger",
    "job_trigger_tagged",
    "job_update",
    "jobs_delete",
    "jobs_doomed",
    "retry_delay",
    "schedule_check",
    "schedule_check_delay",
    "schedule_check_expression",
    "schedule_check_moment",
    "schedule_create",
    "schedule_delete",
    "schedule_next_due",
    "schedule_next_run",
    "schedule_parse",
    "schedule_save",
    "schedule_upcoming",
    "schedule_update",
    "schedules_fire_due",
]
