"""The audit log's and the delivery log's admin lists: tables that grow without bound
are never counted whole, nor read for the values of a filter."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEntry

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "url", ["/admin/audit/auditentry/", "/admin/jobs/notificationdelivery/"]
)
def test_it_lists_a_log_without_reading_all_of_it(
    admin_client: Client, url: str
) -> None:
    AuditEntry.objects.create(method="POST", path="/api/jobs/", status=201)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url)
    assert response.status_code == 200
    sql = " ".join(q["sql"] for q in queries.captured_queries).upper()
    assert "DISTINCT" not in sql
    assert "LIMIT 10001" in sql  # the capped count


def test_it_filters_the_audit_log_by_method_and_answer(admin_client: Client) -> None:
    AuditEntry.objects.create(method="POST", path="/api/jobs/", status=201)
    AuditEntry.objects.create(method="DELETE", path="/api/jobs/7/", status=404)
    html = admin_client.get("/admin/audit/auditentry/?answered=4").content.decode()
    assert "/api/jobs/7/" in html and "/api/jobs/</" not in html
    html = admin_client.get("/admin/audit/auditentry/?method=POST").content.decode()
    assert "/api/jobs/7/" not in html
