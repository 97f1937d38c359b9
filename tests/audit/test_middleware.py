from __future__ import annotations

from collections.abc import Callable
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from audit.models import AuditEntry
from jobs.models import Job

pytestmark = pytest.mark.django_db


def test_it_records_a_write_with_who_what_and_from_where(
    api: APIClient, admin_user: User, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    with mock.patch("jobs.tasks.run_execution.apply_async"):
        api.post(
            f"/api/jobs/{job.pk}/run/", REMOTE_ADDR="10.1.2.3", HTTP_USER_AGENT="curl/8"
        )
    [entry] = AuditEntry.objects.all()
    assert (entry.actor, entry.actor_name) == (admin_user, "admin")
    assert (entry.method, entry.path, entry.status) == (
        "POST",
        f"/api/jobs/{job.pk}/run/",
        202,
    )
    assert (entry.address, entry.user_agent) == ("10.1.2.3", "curl/8")


def test_it_records_refused_writes_as_anonymous(anon: APIClient) -> None:
    anon.delete("/api/jobs/1/")
    [entry] = AuditEntry.objects.all()
    assert (entry.actor, entry.actor_name, entry.status) == (None, "", 401)


def test_it_ignores_reads(api: APIClient) -> None:
    api.get("/api/jobs/")
    assert not AuditEntry.objects.exists()


def test_it_lists_and_exports_entries_in_the_admin(
    admin_client: Client, api: APIClient
) -> None:
    api.post("/api/apps/", {"name": "ops"})
    page = admin_client.get("/admin/audit/auditentry/")
    assert page.status_code == 200
    assert b"/api/apps/" in page.content
    entry = AuditEntry.objects.get()
    response = admin_client.post(
        "/admin/audit/auditentry/",
        {"action": "export_csv", "_selected_action": [entry.pk]},
    )
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    lines = response.content.decode().splitlines()
    assert lines[0] == "created,who,method,path,status,from"
    assert ",admin,POST,/api/apps/,201," in lines[1]
