"""jobs/access.py, and per-app access in the REST API (KARMCHARI_PER_APP_ACCESS)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from unittest import mock

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core.cache import cache
from django.test import override_settings
from rest_framework.test import APIClient

from jobs import access, stats
from jobs.models import App, Execution, ExecutionEvent, Job, Schedule
from tests.tokens import make_token

pytestmark = pytest.mark.django_db

on = override_settings(KARMCHARI_PER_APP_ACCESS=True)


@pytest.fixture(autouse=True)
def no_broker() -> Iterator[mock.MagicMock]:
    with mock.patch("jobs.tasks.run_execution.apply_async") as apply_async:
        yield apply_async


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    cache.clear()


@pytest.fixture
def world(make_app: Callable[..., App]) -> dict[str, App]:
    """Three apps: "mine" granted to the member, "ours" to their group "team",
    "theirs" to nobody."""
    mine, ours, theirs = make_app("mine"), make_app("ours"), make_app("theirs")
    ours.groups.add(Group.objects.create(name="team"))
    return {"mine": mine, "ours": ours, "theirs": theirs}


@pytest.fixture
def member(make_user: Callable[..., User], world: dict[str, App]) -> User:
    """An editor who may also manage shell jobs, granted "mine" and, through the
    group "team", "ours"."""
    return make_user(
        groups=["editor", "team"],
        perms=["jobs.manage_shell_job"],
        apps=[world["mine"]],
    )


def client_for(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_token(user).key}")
    return client


def names(response: object) -> set[str]:
    body = response.json()  # type: ignore[attr-defined]
    rows = body["results"] if isinstance(body, dict) else body
    return {row["name"] for row in rows}


# --- The helper ----------------------------------------------------------------------


def test_it_sees_every_app_while_off(member: User, world: dict[str, App]) -> None:
    assert not access.is_restricted(member)
    assert set(access.apps_for(member)) == set(world.values())
    assert access.scope(member) is None
    jobs = Job.objects.all()
    assert access.restrict(jobs, member, "app") is jobs


@on
def test_it_grants_apps_through_the_user_and_their_groups_once_each(
    member: User, world: dict[str, App]
) -> None:
    world["mine"].groups.add(Group.objects.get(name="team"))  # granted twice
    assert access.is_restricted(member)
    assert list(access.apps_for(member)) == [world["mine"], world["ours"]]
    assert access.may_see(member, world["ours"])
    assert not access.may_see(member, world["theirs"])
    assert not access.may_see(member, None)


@on
def test_it_narrows_any_queryset_by_the_path_to_its_app(
    member: User, world: dict[str, App], make_execution: Callable[..., Execution]
) -> None:
    mine = make_execution(job=Job.objects.create(app=world["mine"], name="a"))
    make_execution(job=Job.objects.create(app=world["theirs"], name="b"))
    executions = access.restrict(Execution.objects.all(), member, "job__app")
    assert list(executions) == [mine]
    assert list(access.restrict(Job.objects.all(), member, "app")) == [mine.job]
    assert access.visible(Job, member) is not None
    assert access.visible(User, member) is None  # not a model of an app


@on
def test_it_lets_superusers_and_access_all_apps_see_every_app(
    make_user: Callable[..., User], world: dict[str, App]
) -> None:
    boss = make_user("boss", is_superuser=True)
    lead = make_user("lead", perms=["jobs.access_all_apps"])
    nobody = make_user("nobody")
    for user in (boss, lead):
        assert not access.is_restricted(user)
        assert set(access.apps_for(user)) == set(world.values())
    assert access.is_restricted(nobody)
    assert not access.apps_for(nobody).exists()
    assert access.is_restricted(None) and not access.apps_for(None).exists()


def test_it_lets_the_admin_role_see_every_app_and_no_other_role() -> None:
    granted = Permission.objects.get(codename="access_all_apps").group_set
    assert set(granted.values_list("name", flat=True)) == {"admin"}


# --- The API ------------------------------------------------------------------------


def test_it_leaves_the_api_unchanged_while_off(
    member: User, world: dict[str, App], make_job: Callable[..., Job]
) -> None:
    job = make_job(app=world["theirs"])
    client = client_for(member)
    assert names(client.get("/api/apps/")) == set(
        App.objects.values_list("name", flat=True)
    )
    assert client.get(f"/api/jobs/{job.pk}/").status_code == 200
    assert client.get("/api/stats/").json()["jobs"] == 1


@on
def test_it_lists_and_shows_only_the_apps_and_jobs_granted(
    member: User,
    world: dict[str, App],
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
    make_schedule: Callable[..., Schedule],
) -> None:
    mine = make_job(app=world["mine"], name="mine-job")
    ours = make_job(app=world["ours"], name="ours-job")
    theirs = make_job(app=world["theirs"], name="theirs-job")
    runs = {job: make_execution(job=job) for job in (mine, ours, theirs)}
    schedules = {job: make_schedule(job=job) for job in (mine, ours, theirs)}
    client = client_for(member)

    assert names(client.get("/api/apps/")) == {"mine", "ours"}
    assert names(client.get("/api/jobs/")) == {"mine-job", "ours-job"}
    listed = client.get("/api/executions/").json()["results"]
    assert {row["id"] for row in listed} == {runs[mine].pk, runs[ours].pk}
    listed = client.get("/api/schedules/").json()["results"]
    assert {row["id"] for row in listed} == {schedules[mine].pk, schedules[ours].pk}

    assert client.get("/api/apps/ours/").status_code == 200
    for url in (
        "/api/apps/theirs/",
        f"/api/jobs/{theirs.pk}/",
        f"/api/jobs/{theirs.pk}/stats/",
        f"/api/executions/{runs[theirs].pk}/",
        f"/api/executions/{runs[theirs].pk}/log/",
        f"/api/executions/{runs[theirs].pk}/output/",
        f"/api/schedules/{schedules[theirs].pk}/",
        f"/api/schedules/{schedules[theirs].pk}/preview/",
    ):
        assert client.get(url).status_code == 404, url
    assert client.get("/api/jobs/?app=theirs").json()["results"] == []


@on
def test_it_lists_jobs_of_the_granted_apps_in_constant_queries(
    member: User,
    world: dict[str, App],
    make_job: Callable[..., Job],
    django_assert_num_queries: Callable[..., object],
) -> None:
    for _ in range(5):
        make_job(app=world["mine"])
        make_job(app=world["theirs"])
    client = client_for(member)
    client.get("/api/jobs/")  # first use of the token records its last use
    # token + user and group permissions + count + page + schedules + parents +
    # children + secret names + queues + the ids of the granted apps (for the
    # parents and children shown)
    with django_assert_num_queries(11):
        assert len(client.get("/api/jobs/").json()["results"]) == 5


@on
def test_it_refuses_pointing_at_an_app_or_job_it_cannot_see_as_missing(
    member: User, world: dict[str, App], make_job: Callable[..., Job]
) -> None:
    mine = make_job(app=world["mine"])
    theirs = make_job(app=world["theirs"])
    client = client_for(member)
    job = {"name": "new", "spec": {"command": "true"}}

    response = client.post("/api/jobs/", {**job, "app": "theirs"}, format="json")
    assert response.status_code == 400
    [refusal] = response.json()["app"]
    missing = client.post("/api/jobs/", {**job, "app": "nowhere"}, format="json")
    assert missing.json()["app"] == [refusal.replace("theirs", "nowhere")]
    response = client.post(
        "/api/jobs/", {**job, "app": "mine", "parents": [theirs.pk]}, format="json"
    )
    assert response.status_code == 400
    assert "does not exist" in response.json()["parents"][0]
    response = client.patch(f"/api/jobs/{mine.pk}/", {"app": "theirs"}, format="json")
    assert response.status_code == 400
    response = client.post(
        "/api/schedules/", {"job": theirs.pk, "expression": "* * * * *"}, format="json"
    )
    assert response.status_code == 400
    assert "does not exist" in response.json()["job"][0]
    assert not Job.objects.filter(name="new").exists()
    assert not Schedule.objects.exists()
    mine.refresh_from_db()
    assert mine.app == world["mine"]

    response = client.post("/api/jobs/", {**job, "app": "ours"}, format="json")
    assert response.status_code == 201, response.json()


@on
def test_it_answers_as_missing_when_filtering_by_a_job_it_cannot_see(
    member: User, world: dict[str, App], make_job: Callable[..., Job]
) -> None:
    mine, theirs = make_job(app=world["mine"]), make_job(app=world["theirs"])
    client = client_for(member)
    assert client.get(f"/api/executions/?job={mine.pk}").status_code == 200
    for url in (
        f"/api/executions/?job={theirs.pk}",
        "/api/executions/?job=999999",
        f"/api/schedules/?job={theirs.pk}",
    ):
        assert client.get(url).status_code == 400, url


@on
def test_it_cannot_run_or_control_runs_of_other_apps(
    member: User,
    world: dict[str, App],
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
) -> None:
    theirs = make_job(app=world["theirs"])
    running = make_execution(job=theirs, status=Execution.Status.RUNNING)
    failed = make_execution(job=theirs, status=Execution.Status.FAILED)
    client = client_for(member)

    assert client.post(f"/api/jobs/{theirs.pk}/run/").status_code == 404
    assert client.post(f"/api/jobs/{theirs.pk}/disable/").status_code == 404
    for verb in ("pause", "resume", "kill"):
        assert client.post(f"/api/executions/{running.pk}/{verb}/").status_code == 404
    assert client.post(f"/api/executions/{failed.pk}/retry/").status_code == 404
    assert client.delete(f"/api/jobs/{theirs.pk}/").status_code == 404
    running.refresh_from_db()
    assert running.desired_state == Execution.DesiredState.RUN
    assert not ExecutionEvent.objects.exists()
    assert Execution.objects.count() == 2
    assert Job.objects.get(pk=theirs.pk).enabled

    mine = make_job(app=world["mine"])
    assert client.post(f"/api/jobs/{mine.pk}/run/").status_code == 202


@on
def test_it_counts_only_the_users_apps_in_stats(
    member: User,
    api: APIClient,
    world: dict[str, App],
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
) -> None:
    mine = make_job(app=world["mine"], success_count=2)
    theirs = make_job(app=world["theirs"], success_count=5, enabled=False)
    make_execution(job=mine, status=Execution.Status.RUNNING)
    make_execution(job=theirs, status=Execution.Status.FAILED)
    client = client_for(member)

    figures = client.get("/api/stats/").json()
    assert (figures["jobs"], figures["disabled_jobs"]) == (1, 0)
    assert figures["success_count"] == 2
    assert figures["executions"]["running"] == 1
    assert figures["executions"]["failed"] == 0
    # Computed on each call, and never stored as the global figures.
    make_job(app=world["ours"])
    assert client.get("/api/stats/").json()["jobs"] == 2
    everything = api.get("/api/stats/").json()
    assert (everything["jobs"], everything["success_count"]) == (3, 7)
    assert client.get("/api/stats/").json()["jobs"] == 2
    assert stats.stats_global()["jobs"] == 3
    assert client.get(f"/api/jobs/{mine.pk}/stats/").json()["executions"] == {
        **dict.fromkeys(Execution.Status.values, 0),
        "running": 1,
    }


@on
def test_it_lets_superusers_and_access_all_apps_use_the_api_over_every_app(
    api: APIClient, make_user: Callable[..., User], world: dict[str, App]
) -> None:
    lead = make_user("lead", groups=["viewer"], perms=["jobs.access_all_apps"])
    for client in (api, client_for(lead)):
        assert names(client.get("/api/apps/")) == {"mine", "ours", "theirs"}


@on
def test_it_grants_a_new_app_to_the_restricted_user_who_made_it(
    member: User, api: APIClient
) -> None:
    client = client_for(member)
    response = client.post("/api/apps/", {"name": "fresh"}, format="json")
    assert response.status_code == 201
    assert response.json()["users"] == ["member"]
    assert client.get("/api/apps/fresh/").status_code == 200
    # An unrestricted creator is not added: the grant list is what they sent.
    assert api.post("/api/apps/", {"name": "other"}).json()["users"] == []


@on
def test_it_grants_apps_to_users_and_groups_by_name(
    member: User,
    make_user: Callable[..., User],
    make_app: Callable[..., App],
    world: dict[str, App],
) -> None:
    make_user("colleague")
    client = client_for(member)
    response = client.patch(
        "/api/apps/mine/",
        {"users": ["member", "colleague"], "groups": ["team"]},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["users"] == ["member", "colleague"]
    assert response.json()["groups"] == ["team"]
    assert set(world["mine"].users.values_list("username", flat=True)) == {
        "member",
        "colleague",
    }
    response = client.patch("/api/apps/mine/", {"users": ["ghost"]}, format="json")
    assert response.status_code == 400
    assert "does not exist" in response.json()["users"][0]


@on
def test_it_needs_the_change_app_permission_to_grant_an_app(
    make_user: Callable[..., User], world: dict[str, App]
) -> None:
    creator = make_user("creator", perms=["jobs.add_app", "jobs.view_app"])
    client = client_for(creator)
    response = client.post(
        "/api/apps/", {"name": "fresh", "groups": ["team"]}, format="json"
    )
    assert response.status_code == 403
    assert "jobs.change_app" in response.json()["detail"]
    assert not App.objects.filter(name="fresh").exists()
    assert client.post("/api/apps/", {"name": "fresh"}).status_code == 201


@on
def test_it_keeps_parents_in_apps_hidden_from_the_editor(
    member: User, world: dict[str, App], make_job: Callable[..., Job]
) -> None:
    hidden = make_job(app=world["theirs"], name="hidden")
    seen = make_job(app=world["mine"], name="seen")
    other = make_job(app=world["ours"], name="other")
    child = make_job(app=world["mine"], name="child")
    child.parents.set([hidden, seen])
    client = client_for(member)

    assert client.get(f"/api/jobs/{child.pk}/").json()["parents"] == [seen.pk]
    response = client.patch(
        f"/api/jobs/{child.pk}/", {"parents": [other.pk]}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["parents"] == [other.pk]
    assert set(child.parents.all()) == {hidden, other}


@on
def test_it_keeps_children_in_apps_hidden_from_the_editor(
    member: User, world: dict[str, App], make_job: Callable[..., Job]
) -> None:
    parent = make_job(app=world["mine"], name="parent")
    hidden = make_job(app=world["theirs"], name="hidden")
    seen = make_job(app=world["mine"], name="seen")
    other = make_job(app=world["ours"], name="other")
    for child in (hidden, seen):
        child.parents.add(parent)
    client = client_for(member)

    assert client.get(f"/api/jobs/{parent.pk}/").json()["children"] == [seen.pk]
    response = client.patch(
        f"/api/jobs/{parent.pk}/", {"children": [other.pk]}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["children"] == [other.pk]
    assert set(parent.children.all()) == {hidden, other}


@on
def test_it_leaves_children_in_apps_hidden_from_the_deleter_on_a_delete(
    member: User, world: dict[str, App], make_job: Callable[..., Job]
) -> None:
    parent = make_job(app=world["mine"], name="parent")
    hidden = make_job(app=world["theirs"], name="hidden")
    seen = make_job(app=world["mine"], name="seen")
    for child in (hidden, seen):
        child.parents.add(parent)
    client = client_for(member)
    assert client.delete(f"/api/jobs/{parent.pk}/").status_code == 204
    # Kala's rule within what the member may see; the hidden child only loses its
    # link.
    assert set(Job.objects.values_list("name", flat=True)) == {"hidden"}
    assert not Job.objects.get(name="hidden").parents.exists()
