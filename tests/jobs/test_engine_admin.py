"""Control buttons, bulk actions and the audit inline on the execution admin."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from jobs.models import Execution, ExecutionEvent

pytestmark = pytest.mark.django_db


def test_it_shows_control_buttons_and_the_live_log(
    admin_client: Client, make_execution: Callable[..., Execution]
) -> None:
    execution = make_execution(status=Execution.Status.RUNNING)
    page = admin_client.get(f"/admin/jobs/execution/{execution.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    for verb in ("pause", "resume", "kill"):
        assert f"/admin/jobs/execution/{execution.pk}/control/{verb}/" in html
    assert f"/api/executions/{execution.pk}/log/" in html
    # Retry is there for when the run ends (the page follows it live), but hidden.
    retry = html.split(f"/admin/jobs/execution/{execution.pk}/control/retry/")[0]
    assert retry.rsplit("<li", 1)[1].endswith(
        'skipped" hidden><form method="post" action="'
    )


def test_it_calls_the_service_from_a_button_and_records_the_operator(
    admin_client: Client, make_execution: Callable[..., Execution]
) -> None:
    execution = make_execution(status=Execution.Status.RUNNING)
    response = admin_client.post(
        f"/admin/jobs/execution/{execution.pk}/control/kill/", follow=True
    )
    assert response.redirect_chain[-1][0] == (
        f"/admin/jobs/execution/{execution.pk}/change/"
    )
    assert f"Asked #{execution.pk} to kill." in response.content.decode()
    execution.refresh_from_db()
    assert execution.desired_state == Execution.DesiredState.KILL
    event = ExecutionEvent.objects.get()
    assert event.actor is not None and event.actor.get_username() == "admin"
    page = admin_client.get(f"/admin/jobs/execution/{execution.pk}/change/")
    assert "Control events" in page.content.decode()


def test_it_reports_a_refused_command_rather_than_raising_it(
    admin_client: Client, make_execution: Callable[..., Execution]
) -> None:
    done = make_execution(status=Execution.Status.FAILED)
    response = admin_client.post(
        f"/admin/jobs/execution/{done.pk}/control/pause/", follow=True
    )
    assert "already finished (failed)" in response.content.decode()
    assert (
        admin_client.get(f"/admin/jobs/execution/{done.pk}/control/kill/").status_code
        == 405
    )


def test_it_kills_pending_executions_in_bulk(
    admin_client: Client, make_execution: Callable[..., Execution]
) -> None:
    pending = [make_execution(), make_execution()]
    admin_client.post(
        "/admin/jobs/execution/",
        {"action": "kill_selected", "_selected_action": [e.pk for e in pending]},
    )
    assert set(
        Execution.objects.filter(pk__in=[e.pk for e in pending]).values_list(
            "status", flat=True
        )
    ) == {"killed"}
