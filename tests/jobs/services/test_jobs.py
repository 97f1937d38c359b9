"""jobs.services.jobs: dependencies between jobs, and their cycles."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest

from jobs import services
from jobs.models import Job
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db


def test_it_edits_children_from_the_parent_s_side(
    api: Any, make_job: Callable[..., Job]
) -> None:
    a, b, c = make_job(name="a"), make_job(name="b"), make_job(name="c")
    response = api.patch(f"/api/jobs/{a.pk}/", {"children": [b.pk, c.pk]})
    assert response.status_code == 200, response.json()
    assert sorted(response.json()["children"]) == [b.pk, c.pk]
    assert api.get(f"/api/jobs/{b.pk}/").json()["parents"] == [a.pk]
    # c under a, so a under c would be a cycle: refused, nothing changed.
    refused = api.patch(f"/api/jobs/{c.pk}/", {"children": [a.pk]})
    assert refused.status_code == 400
    assert "already runs after it" in refused.json()["children"][0]
    assert api.patch(f"/api/jobs/{a.pk}/", {"children": [a.pk]}).status_code == 400
    assert list(c.children.all()) == []
    created = api.post(
        "/api/jobs/",
        {
            "app": a.app.name,
            "name": "d",
            "spec": {"command": "true"},
            "parents": [b.pk],
            "children": [b.pk],
        },
        format="json",
    )
    assert created.status_code == 400
    assert "children" in created.json()
    assert api.patch(f"/api/jobs/{a.pk}/", {"children": []}).json()["children"] == []


def test_it_refuses_dependency_cycles_with_400(
    api: Any, make_job: Callable[..., Job]
) -> None:
    a, b, c = make_job(), make_job(), make_job()
    assert api.patch(f"/api/jobs/{b.pk}/", {"parents": [a.pk]}).status_code == 200
    assert api.patch(f"/api/jobs/{c.pk}/", {"parents": [b.pk]}).status_code == 200
    response = api.patch(f"/api/jobs/{a.pk}/", {"parents": [c.pk]})
    assert response.status_code == 400
    assert "would depend on itself" in response.json()["parents"][0]
    self_loop = api.patch(f"/api/jobs/{a.pk}/", {"parents": [a.pk]})
    assert self_loop.status_code == 400
    assert api.get(f"/api/jobs/{c.pk}/").json()["parents"] == [b.pk]


def test_it_keeps_two_edits_at_once_from_making_a_cycle(
    make_job: Callable[..., Job], transactional_db: None
) -> None:
    from django.db import connection, connections

    from jobs.services import jobs as job_services

    if connection.vendor != "postgresql":
        pytest.skip("the lock is PostgreSQL's")
    a, b = make_job(name="a"), make_job(name="b")
    checked, other_done = threading.Event(), threading.Event()
    check = job_services.job_parents_cycle

    def other_edit_waits() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks "
                "WHERE locktype = 'advisory' AND NOT granted"
            )
            return bool(cursor.fetchone()[0])

    def slow_check(*, job: Job, parents: list[Job]) -> str | None:
        why = check(job=job, parents=parents)
        if job.pk == a.pk:
            checked.set()
            # Checked, not yet written: hold on until the other edit is either
            # stuck behind the lock or (with no lock) done.
            wait_for(lambda: other_done.is_set() or other_edit_waits(), timeout=10)
        return why

    refused: list[Exception] = []

    def edit(child: Job, parent: Job) -> None:
        try:
            services.job_set_parents(job=child, parents=[parent])
        except services.DependencyCycle as exc:
            refused.append(exc)
        finally:
            connections.close_all()

    with mock.patch.object(job_services, "job_parents_cycle", slow_check):
        first = threading.Thread(target=edit, args=(a, b))
        first.start()
        assert checked.wait(5)
        edit(b, a)
        other_done.set()
        first.join()
    assert len(refused) == 1
    assert not (
        a.parents.filter(pk=b.pk).exists() and b.parents.filter(pk=a.pk).exists()
    )
