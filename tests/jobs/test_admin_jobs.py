"""The operator console's job pages: the list, the job page, its secrets and run
now (jobs/admin/jobs.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from jobs import services
from jobs.admin import JobForm
from jobs.admin.jobs import JobAdmin, JobSecretForm
from jobs.models import App, Execution, Job, JobSecret, Schedule
from jobs.runners import SECRET_MASK
from jobs.secrets import job_secrets_reveal
from tests.jobs.conftest import NumQueries

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]


def test_it_lists_jobs_with_schedule_last_status_and_next_run_in_constant_queries(
    admin_client: Client,
    make_job: Callable[..., Job],
    make_schedule: Callable[..., Schedule],
    make_execution: Callable[..., Execution],
    django_assert_num_queries: NumQueries,
) -> None:
    def world(n: int) -> None:
        for _ in range(n):
            job = make_job()
            make_schedule("*/5 * * * *", job=job)
            make_schedule("0 3 * * *", job=job)
            make_execution(job=job, status=Execution.Status.SUCCEEDED)
            make_execution(job=job, status=Execution.Status.FAILED)

    world(2)
    make_job(name="idle")
    # session, user, app filter choices, 2 counts, page, schedules prefetch
    with django_assert_num_queries(7):
        admin_client.get("/admin/jobs/job/")
    world(10)
    with django_assert_num_queries(7):
        response = admin_client.get("/admin/jobs/job/")
    html = response.content.decode()
    assert html.count('<span class="k-badge k-badge-failed">failed</span>') == 12
    assert '<span class="k-badge k-badge-never">never run</span>' in html
    assert "(+1 more)" in html
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(in ", html)


def test_it_filters_jobs_by_last_status(
    admin_client: Client,
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
) -> None:
    failed, fixed = make_job(name="failed-now"), make_job(name="fixed-now")
    make_job(name="never-ran")
    make_execution(job=failed, status=Execution.Status.SUCCEEDED)
    make_execution(job=failed, status=Execution.Status.FAILED)
    make_execution(job=fixed, status=Execution.Status.FAILED)
    make_execution(job=fixed, status=Execution.Status.SUCCEEDED)

    def names(query: str) -> set[str]:
        response = admin_client.get(f"/admin/jobs/job/?{query}")
        return set(
            re.findall(
                r">((?:failed|fixed|never)-[a-z]+)</a>", response.content.decode()
            )
        )

    assert names("last_status=failed") == {"failed-now"}
    assert names("last_status=succeeded") == {"fixed-now"}
    assert names("last_status=never") == {"never-ran"}
    assert names("q=fixed") == {"fixed-now"}


def test_it_shows_schedules_runs_dependencies_and_stats_on_the_job_page(
    admin_client: Client,
    make_job: Callable[..., Job],
    make_schedule: Callable[..., Schedule],
    make_execution: Callable[..., Execution],
) -> None:
    job = make_job(name="parent")
    child = make_job(name="child")
    services.job_set_parents(job=child, parents=[job])
    make_schedule("0 9 * * 1-5", job=job, timezone="Europe/Berlin")
    runs = [
        make_execution(job=job, status=Execution.Status.SUCCEEDED) for _ in range(12)
    ]

    response = admin_client.get(f"/admin/jobs/job/{job.pk}/change/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "cron: at 09:00 on MON-FRI (Europe/Berlin)" in html
    assert html.count('class="k-fire"') == 5
    assert "CET" in html or "CEST" in html
    assert "Recent executions (newest 10)" in html
    assert f"/admin/jobs/execution/{runs[-1].pk}/change/" in html
    assert f"/admin/jobs/execution/{runs[0].pk}/change/" not in html
    assert f'<a href="/admin/jobs/job/{child.pk}/change/">default / child</a>' in html
    assert 'id="k-job-stats"' in html and "k-hourly" in html
    assert f"/admin/jobs/job/{job.pk}/run/" in html
    assert f"/admin/jobs/execution/?job__id__exact={job.pk}" in html


def test_it_keeps_the_runs_and_schedules_when_the_job_page_is_saved(
    admin_client: Client,
    make_job: Callable[..., Job],
    make_schedule: Callable[..., Schedule],
    make_execution: Callable[..., Execution],
) -> None:
    job = make_job(name="keep")
    schedule = make_schedule("0 9 * * *", job=job)
    run = make_execution(job=job, status=Execution.Status.SUCCEEDED)
    page = admin_client.get(f"/admin/jobs/job/{job.pk}/change/")
    form = page.context["adminform"].form
    data = {
        name: value
        for name, value in form.initial.items()
        if name in form.fields and value is not None
    }
    data.update(
        {
            "app": job.app_id,
            "spec": '{"command": "echo changed"}',
            "tags": "[]",
            "parents": [],
            "enabled": "",
            "schedules-TOTAL_FORMS": "1",
            "schedules-INITIAL_FORMS": "1",
            "schedules-0-id": schedule.pk,
            "schedules-0-job": job.pk,
            "schedules-0-kind": "cron",
            "schedules-0-expression": "0 10 * * *",
            "schedules-0-timezone": "UTC",
            "schedules-0-enabled": "on",
            "secrets-TOTAL_FORMS": "0",
            "secrets-INITIAL_FORMS": "0",
            "executions-TOTAL_FORMS": "1",
            "executions-INITIAL_FORMS": "1",
            "executions-0-id": run.pk,
            "executions-0-job": job.pk,
        }
    )
    data.pop("legacy", None)
    for name in ("legacy",):
        if name in form.fields:
            data[name] = "{}"
    response = admin_client.post(f"/admin/jobs/job/{job.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    job.refresh_from_db()
    schedule.refresh_from_db()
    assert job.spec == {"command": "echo changed"} and not job.enabled
    assert schedule.expression == "0 10 * * *" and schedule.next_run_at is not None
    assert Execution.objects.get(pk=run.pk).status == Execution.Status.SUCCEEDED


def test_it_refuses_a_bad_spec_and_a_dependency_cycle_in_the_job_form(
    make_job: Callable[..., Job],
) -> None:
    parent = make_job(name="p")
    child = make_job(name="c")
    services.job_set_parents(job=child, parents=[parent])
    form = JobForm(
        instance=parent,
        data={
            "app": parent.app_id,
            "name": "p",
            "kind": "shell",
            "spec": '{"commandd": "x"}',
            "queue": "celery",
            "max_retries": 0,
            "retry_backoff": 10,
            "overlap_policy": "skip",
            "tags": "[]",
            "legacy": "{}",
            "parents": [child.pk],
        },
    )
    assert not form.is_valid()
    assert "commandd" in str(form.errors["spec"])
    assert "would depend on itself" in str(form.errors["parents"])


def test_it_does_not_offer_a_job_as_its_own_parent_in_the_job_form(
    make_job: Callable[..., Job],
) -> None:
    job, other = make_job(name="self"), make_job(name="other")
    offered = set(JobForm(instance=job).fields["parents"].queryset)  # type: ignore[attr-defined]
    assert offered == {other}
    assert set(JobForm().fields["parents"].queryset) == {job, other}  # type: ignore[attr-defined]


def _job_page_data(page: object, **extra: object) -> dict[str, object]:
    """What the job page posts back unchanged, plus `extra`."""
    form = page.context["adminform"].form  # type: ignore[attr-defined]
    data: dict[str, object] = {
        name: value
        for name, value in form.initial.items()
        if name in form.fields and value is not None and name != "parents"
    }
    data["spec"] = json.dumps(form.initial["spec"])
    data["tags"] = json.dumps(form.initial["tags"])
    data["legacy"] = "{}"
    for name, field in form.fields.items():
        if field.show_hidden_initial:  # as the browser posts them back
            data[f"initial-{name}"] = form[name].value()
    data["enabled"] = "on"
    for formset in page.context["inline_admin_formsets"]:  # type: ignore[attr-defined]
        management = formset.formset.management_form
        prefix = formset.formset.prefix
        data[f"{prefix}-TOTAL_FORMS"] = management.initial["TOTAL_FORMS"]
        data[f"{prefix}-INITIAL_FORMS"] = management.initial["INITIAL_FORMS"]
        for index, inline in enumerate(formset.formset.forms):
            data[f"{prefix}-{index}-id"] = inline.instance.pk
            data[f"{prefix}-{index}-job"] = inline.instance.job_id
            if prefix == "secrets":
                data[f"{prefix}-{index}-name"] = inline.instance.name
            if prefix == "schedules":
                for field in ("kind", "expression", "timezone"):
                    data[f"{prefix}-{index}-{field}"] = getattr(inline.instance, field)
    data.update(extra)
    return data


def test_it_shows_secret_names_never_their_values_on_the_job_page(
    admin_client: Client, make_app: Callable[..., App]
) -> None:
    job = services.job_create(
        app=make_app(),
        name="backup",
        spec={"command": "backup.sh", "env": {"API_TOKEN": "s3cret-value", "X": "1"}},
    )
    page = admin_client.get(f"/admin/jobs/job/{job.pk}/change/")
    html = page.content.decode()
    assert "API_TOKEN" in html
    assert "s3cret-value" not in html
    assert 'type="password"' in html

    # Blank keeps the stored value; a new row sets one; the spec's env moves over.
    data = _job_page_data(
        page,
        spec=json.dumps({"command": "backup.sh", "env": {"DB_PASSWORD": "from-spec"}}),
        **{
            "secrets-TOTAL_FORMS": "2",
            "secrets-0-new_value": "",
            "secrets-1-name": "NEW_ONE",
            "secrets-1-new_value": "fresh-value",
            "secrets-1-job": job.pk,
        },
    )
    response = admin_client.post(f"/admin/jobs/job/{job.pk}/change/", data)
    assert response.status_code == 302, response.context["errors"]
    job.refresh_from_db()
    assert job.spec == {"command": "backup.sh"}
    assert job_secrets_reveal(job_id=job.pk) == {
        "API_TOKEN": "s3cret-value",
        "DB_PASSWORD": "from-spec",
        "NEW_ONE": "fresh-value",
    }
    html = admin_client.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    for value in ("s3cret-value", "from-spec", "fresh-value"):
        assert value not in html
    history = admin_client.get(f"/admin/jobs/job/{job.pk}/history/").content.decode()
    assert "fresh-value" not in history


def test_it_changes_and_deletes_secrets_on_the_job_page(
    admin_client: Client, make_app: Callable[..., App]
) -> None:
    job = services.job_create(
        app=make_app(),
        name="sync",
        spec={"command": "sync.sh"},
        secrets={"A_TOKEN": "old-value", "B_TOKEN": "doomed-value"},
    )
    page = admin_client.get(f"/admin/jobs/job/{job.pk}/change/")
    data = _job_page_data(
        page,
        **{
            "secrets-0-new_value": "new-value",
            "secrets-1-DELETE": "on",
        },
    )
    response = admin_client.post(f"/admin/jobs/job/{job.pk}/change/", data)
    assert response.status_code == 302, response.context["errors"]
    assert job_secrets_reveal(job_id=job.pk) == {"A_TOKEN": "new-value"}


def test_it_needs_a_value_for_a_new_secret_on_the_job_page(
    admin_client: Client, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    page = admin_client.get(f"/admin/jobs/job/{job.pk}/change/")
    data = _job_page_data(
        page,
        **{
            "secrets-TOTAL_FORMS": "1",
            "secrets-0-name": "EMPTY_TOKEN",
            "secrets-0-job": job.pk,
        },
    )
    response = admin_client.post(f"/admin/jobs/job/{job.pk}/change/", data)
    assert response.status_code == 200
    assert "A new secret needs a value." in response.content.decode()
    assert not job.secrets.exists()


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_it_shows_secrets_read_only_on_the_job_page_to_who_cannot_edit_the_job(
    role: str, make_app: Callable[..., App]
) -> None:
    from django.contrib.auth.models import Group

    # A shell job: editors may not change those, so its secrets are read-only too.
    job = services.job_create(
        app=make_app(), name="b", spec={"command": "x"}, secrets={"A_KEY": "v4lue"}
    )
    user = User.objects.create_user("u", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    browser = Client()
    browser.force_login(user)
    page = browser.get(f"/admin/jobs/job/{job.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "A_KEY" in html and "v4lue" not in html
    assert 'name="secrets-0-new_value"' not in html
    # The value column says a value is stored, without it (not "None").
    cell = re.search(r'<td class="field-new_value">\s*<p>(.*?)</p>', html)
    assert cell is not None and cell[1] == SECRET_MASK
    response = browser.post(
        f"/admin/jobs/job/{job.pk}/change/",
        {
            "secrets-TOTAL_FORMS": "1",
            "secrets-INITIAL_FORMS": "1",
            "secrets-0-id": job.secrets.get().pk,
            "secrets-0-name": "A_KEY",
            "secrets-0-new_value": "changed",
        },
    )
    assert response.status_code == 403
    assert job_secrets_reveal(job_id=job.pk) == {"A_KEY": "v4lue"}


def test_it_moves_spec_secrets_out_when_a_job_is_added_in_the_admin(
    admin_client: Client, make_app: Callable[..., App]
) -> None:
    app = make_app()
    data = {
        "app": app.pk,
        "name": "fresh",
        "kind": "shell",
        "spec": json.dumps({"command": "x", "env": {"MY_PASSWORD": "pw-value"}}),
        "enabled": "on",
        "queue": "celery",
        "max_retries": 0,
        "retry_backoff": 10,
        "overlap_policy": "skip",
        "tags": "[]",
        "legacy": "{}",
        "schedules-TOTAL_FORMS": "0",
        "schedules-INITIAL_FORMS": "0",
        "secrets-TOTAL_FORMS": "1",
        "secrets-INITIAL_FORMS": "0",
        "secrets-0-name": "API_KEY",
        "secrets-0-new_value": "key-value",
        "executions-TOTAL_FORMS": "0",
        "executions-INITIAL_FORMS": "0",
    }
    response = admin_client.post("/admin/jobs/job/add/", data)
    assert response.status_code == 302, response.context["errors"]
    job = Job.objects.get(name="fresh")
    assert job.spec == {"command": "x"}
    assert job_secrets_reveal(job_id=job.pk) == {
        "API_KEY": "key-value",
        "MY_PASSWORD": "pw-value",
    }


def test_it_starts_a_run_and_opens_its_page_on_run_now(
    admin_client: Client, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    response = admin_client.post(f"/admin/jobs/job/{job.pk}/run/", follow=True)
    execution = Execution.objects.get(job=job)
    assert execution.trigger == Execution.Trigger.MANUAL
    assert response.redirect_chain[-1][0] == (
        f"/admin/jobs/execution/{execution.pk}/change/"
    )
    assert f"Started {job.name} as #{execution.pk}." in response.content.decode()
    assert admin_client.get(f"/admin/jobs/job/{job.pk}/run/").status_code == 405


def test_it_says_why_a_disabled_job_does_not_run_now(
    admin_client: Client, make_job: Callable[..., Job]
) -> None:
    job = make_job(enabled=False)
    response = admin_client.post(f"/admin/jobs/job/{job.pk}/run/", follow=True)
    assert "is disabled; enable it before running it" in response.content.decode()
    assert not Execution.objects.exists()


def test_it_runs_enables_and_disables_jobs_through_services_in_list_actions(
    admin_client: Client, make_job: Callable[..., Job]
) -> None:
    jobs = [make_job(), make_job()]
    ids = [job.pk for job in jobs]
    admin_client.post(
        "/admin/jobs/job/", {"action": "disable", "_selected_action": ids}
    )
    assert not Job.objects.filter(enabled=True).exists()
    admin_client.post("/admin/jobs/job/", {"action": "enable", "_selected_action": ids})
    assert Job.objects.filter(enabled=True).count() == 2
    response = admin_client.post(
        "/admin/jobs/job/", {"action": "run_now", "_selected_action": ids}, follow=True
    )
    assert "Started 2 job(s)." in response.content.decode()
    assert Execution.objects.filter(trigger=Execution.Trigger.MANUAL).count() == 2


def test_it_deletes_a_parent_with_its_orphans_and_says_so_first(
    admin_client: Client, make_job: Callable[..., Job]
) -> None:
    parent, orphan, kept = (
        make_job(name=name) for name in ("parent", "orphan", "kept")
    )
    orphan.parents.set([parent])
    url = f"/admin/jobs/job/{parent.pk}/delete/"
    assert "orphan" in admin_client.get(url).content.decode()  # the confirmation
    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    assert list(Job.objects.values_list("name", flat=True)) == ["kept"]
    assert kept.pk


def test_it_deletes_selected_jobs_with_their_orphans(
    admin_client: Client, make_job: Callable[..., Job]
) -> None:
    parent, orphan = make_job(name="parent"), make_job(name="orphan")
    orphan.parents.set([parent])
    response = admin_client.post(
        "/admin/jobs/job/",
        {"action": "delete_selected", "_selected_action": [parent.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert not Job.objects.exists()


def test_it_edits_a_job_s_children(
    admin_client: Client, make_job: Callable[..., Job]
) -> None:
    parent, child = make_job(name="parent"), make_job(name="child")
    url = f"/admin/jobs/job/{parent.pk}/change/"
    page = admin_client.get(url)
    assert 'name="children"' in page.content.decode()
    response = admin_client.post(url, _job_page_data(page, children=[child.pk]))
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert list(child.parents.all()) == [parent]
    refused = admin_client.post(url, _job_page_data(page, children=[parent.pk]))
    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors["children"]


def _job_add_data(app: App, **extra: object) -> dict[str, object]:
    """What the job add page posts for an http job, plus `extra`."""
    data: dict[str, object] = {
        "app": app.pk,
        "name": "new-job",
        "kind": "http",
        "spec": json.dumps({"url": "https://example.test/"}),
        "queue": "celery",
        "max_retries": 0,
        "retry_backoff": 10,
        "overlap_policy": "skip",
        "tags": "[]",
        "legacy": "{}",
        "enabled": "on",
        "schedules-TOTAL_FORMS": 0,
        "schedules-INITIAL_FORMS": 0,
        "secrets-TOTAL_FORMS": 0,
        "secrets-INITIAL_FORMS": 0,
        "executions-TOTAL_FORMS": 0,
        "executions-INITIAL_FORMS": 0,
    }
    data.update(extra)
    return data


@pytest.mark.parametrize(
    ("value", "why"),
    [("a\x00b", "NUL byte"), (SECRET_MASK, "none is stored")],
)
def test_it_refuses_a_spec_secret_the_service_would_refuse_as_a_form_error(
    value: str, why: str, admin_client: Client, make_app: Callable[..., App]
) -> None:
    """A secret-looking env value moves to the job's secrets on save: what
    job_secrets_set refuses there must be said on the form, not raised as a 500."""
    spec = {"command": "true", "env": {"DB_PASSWORD": value}}
    data = _job_add_data(make_app("ops"), kind="shell", spec=json.dumps(spec))

    response = admin_client.post("/admin/jobs/job/add/", data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "DB_PASSWORD" in str(errors["spec"]) and why in str(errors["spec"])
    assert not Job.objects.exists()


def test_it_refuses_a_secret_value_over_the_byte_limit_as_a_form_error(
    admin_client: Client, make_app: Callable[..., App]
) -> None:
    """The service limits a value to MAX_VALUE_BYTES bytes, not characters: 40,000
    "é" (80,000 bytes) are refused on the form."""
    data = _job_add_data(
        make_app("ops"),
        **{
            "secrets-TOTAL_FORMS": 1,
            "secrets-0-name": "API_TOKEN",
            "secrets-0-new_value": "\u00e9" * 40_000,
        },
    )

    response = admin_client.post("/admin/jobs/job/add/", data)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Longer than 65536 bytes." in html
    assert "A new secret needs a value." not in html
    assert not Job.objects.exists()


def test_it_refuses_the_mask_as_a_new_secret_s_value_as_a_form_error(
    admin_client: Client, make_app: Callable[..., App]
) -> None:
    """The mask keeps a stored value, as a blank does: a new secret has none."""
    data = _job_add_data(
        make_app("ops"),
        **{
            "secrets-TOTAL_FORMS": 1,
            "secrets-0-name": "API_TOKEN",
            "secrets-0-new_value": SECRET_MASK,
        },
    )

    response = admin_client.post("/admin/jobs/job/add/", data)

    assert response.status_code == 200
    assert "A new secret needs a value." in response.content.decode()
    assert not Job.objects.exists()


@pytest.mark.parametrize("grace", ["-1 00:00:00", "367 00:00:00", "999999999"])
def test_it_refuses_a_ping_grace_the_api_refuses(
    grace: str, admin_client: Client, make_app: Callable[..., App]
) -> None:
    data = _job_add_data(make_app("ops"), kind="external", spec="{}", ping_grace=grace)

    response = admin_client.post("/admin/jobs/job/add/", data)

    assert response.status_code == 200
    assert "ping_grace" in response.context["adminform"].form.errors
    assert not Job.objects.exists()


def test_it_does_not_bring_back_a_job_deleted_while_its_page_was_saved(
    admin_client: Client,
    make_job: Callable[..., Job],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another user deletes the job after this page was loaded and read back: the
    save says so and restores nothing (it was a 500)."""
    job = make_job(name="doomed")
    page = admin_client.get(f"/admin/jobs/job/{job.pk}/change/")
    real_save_form = JobAdmin.save_form

    def deleted_meanwhile(self: JobAdmin, *args: object, **kwargs: object) -> object:
        Job.objects.filter(pk=job.pk).delete()
        return real_save_form(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(JobAdmin, "save_form", deleted_meanwhile)
    response = admin_client.post(
        f"/admin/jobs/job/{job.pk}/change/",
        _job_page_data(page, description="edited"),
        follow=True,
    )

    assert response.redirect_chain[-1][0] == "/admin/jobs/job/"
    assert [str(m) for m in response.context["messages"]] == [
        "Job 'doomed' was deleted by someone else while you were editing it. Your "
        "changes were not saved."
    ]
    # The page's transaction was rolled back, the simulated delete with it; the edit
    # was never applied.
    assert Job.objects.get(pk=job.pk).description == ""


def _messages(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_it_does_not_link_parents_to_a_job_deleted_while_its_page_was_saved(
    admin_client: Client,
    make_job: Callable[..., Job],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only its parents changed: no field of the job's own row to save, so nothing
    noticed the job had gone, and its links were written for a missing job."""
    job, parent = make_job(name="doomed"), make_job(name="parent")
    page = admin_client.get(f"/admin/jobs/job/{job.pk}/change/")
    real_save_form = JobAdmin.save_form

    def deleted_meanwhile(self: JobAdmin, *args: Any, **kwargs: Any) -> Any:
        Job.objects.filter(pk=job.pk).delete()
        return real_save_form(self, *args, **kwargs)

    monkeypatch.setattr(JobAdmin, "save_form", deleted_meanwhile)
    response = admin_client.post(
        f"/admin/jobs/job/{job.pk}/change/",
        _job_page_data(page, parents=[parent.pk]),
        follow=True,
    )

    assert response.redirect_chain[-1][0] == "/admin/jobs/job/"
    assert _messages(response) == [
        "Job 'doomed' was deleted by someone else while you were editing it. Your "
        "changes were not saved."
    ]
    assert not parent.children.exists()


def test_it_does_not_bring_back_a_secret_deleted_while_the_job_page_was_saved(
    admin_client: Client,
    make_app: Callable[..., App],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = services.job_create(
        app=make_app(), name="sync", spec={"command": "sync.sh"},
        secrets={"A_TOKEN": "old-value"},
    )  # fmt: skip
    page = admin_client.get(f"/admin/jobs/job/{job.pk}/change/")
    real_clean = JobSecretForm.clean

    def deleted_meanwhile(self: JobSecretForm) -> dict[str, Any]:
        # After the page read the row (its id checked), before the save.
        JobSecret.objects.filter(job=job).delete()
        return real_clean(self)

    monkeypatch.setattr(JobSecretForm, "clean", deleted_meanwhile)
    response = admin_client.post(
        f"/admin/jobs/job/{job.pk}/change/",
        _job_page_data(page, **{"secrets-0-new_value": "new-value"}),
        follow=True,
    )

    # Back to the job's page, read afresh: the job stands, only its secret went.
    assert response.redirect_chain[-1][0] == f"/admin/jobs/job/{job.pk}/change/"
    assert _messages(response) == [
        "Job secret 'A_TOKEN' was deleted by someone else while you were editing "
        "it. Your changes were not saved."
    ]
    # It was made anew with the page's value. Here the page's transaction was
    # rolled back, the simulated delete with it.
    assert job_secrets_reveal(job_id=job.pk) == {"A_TOKEN": "old-value"}


def test_it_says_a_schedule_deleted_before_the_job_page_was_saved_is_gone(
    admin_client: Client,
    make_job: Callable[..., Job],
    make_schedule: Callable[..., Schedule],
) -> None:
    """Django refused the page with "Select a valid choice" on a hidden field."""
    job = make_job(name="nightly")
    schedule = make_schedule("0 3 * * *", job=job)
    page = admin_client.get(f"/admin/jobs/job/{job.pk}/change/")
    Schedule.objects.filter(pk=schedule.pk).delete()

    response = admin_client.post(
        f"/admin/jobs/job/{job.pk}/change/",
        _job_page_data(
            page, description="edited", **{"schedules-0-expression": "0 4 * * *"}
        ),
        follow=True,
    )

    assert response.redirect_chain[-1][0] == f"/admin/jobs/job/{job.pk}/change/"
    assert _messages(response) == [
        "Schedule '0 4 * * * (UTC)' was deleted by someone else while you were "
        "editing it. Your changes were not saved."
    ]
    assert not Schedule.objects.exists()
    assert Job.objects.get(pk=job.pk).description == ""


def test_it_leaves_out_a_job_deleted_while_disabling_in_bulk(
    admin_client: Client,
    make_job: Callable[..., Job],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doomed, kept = make_job(name="doomed"), make_job(name="kept")
    real_update = services.job_update

    def deleted_meanwhile(*, job: Job, **fields: Any) -> Job:
        Job.objects.filter(pk=doomed.pk).delete()
        return real_update(job=job, **fields)

    monkeypatch.setattr(services, "job_update", deleted_meanwhile)
    response = admin_client.post(
        "/admin/jobs/job/",
        {"action": "disable", "_selected_action": [doomed.pk, kept.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert _messages(response) == [
        "Job 'doomed' was deleted meanwhile. Left out.",
        "Disabled 1 job(s).",
    ]
    assert not Job.objects.get(pk=kept.pk).enabled


def test_it_deletes_a_secret_row_someone_else_deleted_first_without_a_word(
    admin_client: Client, make_app: Callable[..., App]
) -> None:
    job = services.job_create(
        app=make_app(), name="sync", spec={"command": "sync.sh"},
        secrets={"A_TOKEN": "old-value"},
    )  # fmt: skip
    page = admin_client.get(f"/admin/jobs/job/{job.pk}/change/")
    JobSecret.objects.filter(job=job).delete()

    response = admin_client.post(
        f"/admin/jobs/job/{job.pk}/change/",
        _job_page_data(page, description="edited", **{"secrets-0-DELETE": "on"}),
    )

    assert response.status_code == 302, response.context["errors"]
    assert Job.objects.get(pk=job.pk).description == "edited"
    assert not JobSecret.objects.exists()
