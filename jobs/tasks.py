"""Celery tasks: thin, take primary keys, call services."""

from __future__ import annotations

from celery import Task, shared_task

from jobs import retention, services


@shared_task(
    bind=True,
    name="jobs.run_execution",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def run_execution(self: Task[[int], None], execution_id: int) -> None:
    # Delivered twice (acks_late + a lost worker)? The claim makes the second a no-op.
    services.execution_run(
        execution_id=execution_id, worker=self.request.hostname or ""
    )


@shared_task(
    bind=True,
    name="jobs.deliver_notification",
    acks_late=True,
    ignore_result=True,
    max_retries=None,
)
def deliver_notification(self: Task[[int], None], delivery_id: int) -> None:
    """Send one notification; retried with exponential backoff until
    KARMCHARI_NOTIFY_MAX_ATTEMPTS attempts have failed (then recorded as failed)."""
    from django.conf import settings

    from jobs import notification_sending as sending

    attempt = self.request.retries + 1
    final = attempt >= settings.KARMCHARI_NOTIFY_MAX_ATTEMPTS
    try:
        sending.notification_deliver(delivery_id=delivery_id, final=final)
    except sending.DeliveryFailed as exc:
        raise self.retry(
            exc=exc, countdown=sending.retry_countdown(attempt=attempt)
        ) from None


@shared_task(name="jobs.check_notifications", ignore_result=True)
def check_notifications() -> None:
    """Late runs (sent by beat's housekeeping, at most every
    KARMCHARI_NOTIFY_CHECK_SECONDS)."""
    from jobs import notifications

    notifications.notifications_check_late()


@shared_task(name="jobs.remind_notifications", ignore_result=True)
def remind_notifications() -> int:
    """Reminders of jobs still failing that no run brings (sent by beat's
    housekeeping with the late check)."""
    from jobs import notification_reminders

    return notification_reminders.notifications_remind_due()


@shared_task(name="jobs.prune_executions", ignore_result=True)
def prune_executions() -> int:
    """Retention: beat sends this every KARMCHARI_PRUNE_SECONDS."""
    return retention.executions_prune()
