"""The operator console's app pages (jobs/admin/apps.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from jobs.models import App, Job
from tests.jobs.conftest import NumQueries

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]


def test_it_lists_apps_with_their_job_counts_in_constant_queries(
    admin_client: Client,
    make_job: Callable[..., Job],
    django_assert_num_queries: NumQueries,
) -> None:
    for i in range(5):
        app = App.objects.create(name=f"app{i}")
        make_job(app=app)
        make_job(app=app)
    admin_client.get("/admin/jobs/app/")
    with django_assert_num_queries(5):  # session, user, 2 counts, page
        response = admin_client.get("/admin/jobs/app/")
    assert '<a href="/admin/jobs/job/?app__id__exact=' in response.content.decode()
