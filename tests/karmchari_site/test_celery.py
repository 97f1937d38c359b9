"""The Celery app's per-task database connection handling."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

from karmchari_site import celery


def test_it_keeps_connections_open_across_tasks() -> None:
    # Celery's Django fixup would close every connection after every task.
    assert celery.app.conf.get("CELERY_DB_REUSE_MAX")


def test_it_drops_old_connections_before_a_task() -> None:
    task = SimpleNamespace(request=SimpleNamespace(is_eager=False))
    with mock.patch("django.db.close_old_connections") as close:
        celery.close_old_connections(task=task)
    close.assert_called_once_with()


def test_it_leaves_the_callers_connection_alone_for_an_eager_task() -> None:
    task = SimpleNamespace(request=SimpleNamespace(is_eager=True))
    with mock.patch("django.db.close_old_connections") as close:
        celery.close_old_connections(task=task)
    close.assert_not_called()


def test_it_turns_health_checks_off_in_worker_processes() -> None:
    from django.db import connections

    saved = connections["default"].settings_dict["CONN_HEALTH_CHECKS"]
    try:
        celery.no_health_checks()
        assert connections["default"].settings_dict["CONN_HEALTH_CHECKS"] is False
    finally:
        connections["default"].settings_dict["CONN_HEALTH_CHECKS"] = saved
