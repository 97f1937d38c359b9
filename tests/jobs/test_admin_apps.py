"""The operator console's app pages (jobs/admin/apps.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from jobs.admin.apps import AppAdmin
from jobs.models import App, Job, Schedule
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


def test_it_refreshes_the_dashboard_when_an_app_is_renamed(
    admin_client: Client,
    make_app: Callable[..., App],
    make_job: Callable[..., Job],
    make_schedule: Callable[..., Schedule],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """The App page saves through services.app_update, which forgets the figures
    (the dashboard's next fire times carry the app's name)."""
    app = make_app("old-name")
    make_schedule("17 3 * * *", job=make_job(app=app, name="nightly"))
    assert "old-name / nightly" in admin_client.get("/admin/").content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/jobs/app/{app.pk}/change/",
            {"name": "new-name", "description": "", "meta": "{}"},
        )

    assert response.status_code == 302, response.context["adminform"].form.errors
    html = admin_client.get("/admin/").content.decode()
    assert "old-name / nightly" not in html
    assert "new-name / nightly" in html


def test_it_adds_an_app_with_who_may_see_it(
    admin_client: Client, make_user: Callable[..., User]
) -> None:
    user = make_user("someone")
    response = admin_client.post(
        "/admin/jobs/app/add/",
        {"name": "fresh", "description": "d", "meta": "{}", "users": [user.pk]},
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    app = App.objects.get(name="fresh")
    assert app.description == "d"
    assert list(app.users.all()) == [user]
    assert response["Location"].endswith("/admin/jobs/app/")


def test_it_leaves_who_may_see_an_app_to_those_who_may_change_apps(
    make_user: Callable[..., User],
) -> None:
    """As the API: granting an app to users and groups needs jobs.change_app, on
    the add page too (a user who could only add apps granted them)."""
    team = Group.objects.create(name="team")
    adder = make_user("adder", perms=["jobs.add_app", "jobs.view_app"], is_staff=True)
    client = Client()
    client.force_login(adder)
    assert (
        "groups"
        not in client.get("/admin/jobs/app/add/").context["adminform"].form.fields
    )

    response = client.post(
        "/admin/jobs/app/add/",
        {"name": "granted", "description": "", "meta": "{}", "groups": [team.pk]},
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert not App.objects.get(name="granted").groups.exists()


def test_it_does_not_500_on_an_app_deleted_while_its_page_was_saved(
    admin_client: Client,
    make_app: Callable[..., App],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_app("doomed")
    real_save_form = AppAdmin.save_form

    def deleted_meanwhile(self: AppAdmin, *args: Any, **kwargs: Any) -> Any:
        App.objects.filter(pk=app.pk).delete()
        return real_save_form(self, *args, **kwargs)

    monkeypatch.setattr(AppAdmin, "save_form", deleted_meanwhile)
    response = admin_client.post(
        f"/admin/jobs/app/{app.pk}/change/",
        {"name": "renamed", "description": "", "meta": "{}"},
        follow=True,
    )

    assert response.redirect_chain[-1][0] == "/admin/jobs/app/"
    assert [str(m) for m in response.context["messages"]] == [
        "App 'renamed' was deleted by someone else while you were editing it. Your "
        "changes were not saved."
    ]
    # The page's transaction was rolled back, the simulated delete with it.
    assert App.objects.get().name == "doomed"
