"""The notifications API (jobs/notification_views.py): channels with a write-only
secret and a test message, rules for an app or a job, and the delivery log."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

from jobs.models import (
    App,
    Job,
    NotificationChannel,
    NotificationDelivery,
    NotificationRule,
)
from jobs.notification_serializers import (
    NotificationChannelSerializer,
    NotificationRuleSerializer,
)
from jobs.secrets import decrypt, encrypt
from tests.jobs.test_races import race
from tests.tokens import make_token

pytestmark = pytest.mark.django_db

CHANNELS = "/api/notification-channels/"
RULES = "/api/notification-rules/"
DELIVERIES = "/api/notification-deliveries/"


@pytest.fixture(autouse=True)
def no_broker() -> Iterator[mock.MagicMock]:
    with mock.patch("jobs.tasks.deliver_notification.delay") as delay:
        yield delay


def client_for(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_token(user).key}")
    return client


def make_channel(name: str = "hook", **fields: Any) -> NotificationChannel:
    fields.setdefault("kind", "webhook")
    fields.setdefault("target", "https://x.test/h")
    return NotificationChannel.objects.create(name=name, **fields)


# --- Channels ------------------------------------------------------------------------


def test_it_creates_a_channel_whose_secret_is_stored_encrypted_and_never_shown(
    api: APIClient,
) -> None:
    response = api.post(
        CHANNELS,
        {"name": "hook", "kind": "webhook", "target": "https://x.test/h",
         "secret": "s3cr3t"},
    )  # fmt: skip

    assert response.status_code == 201, response.json()
    body = response.json()
    assert "secret" not in body
    assert body["has_secret"] is True
    token = NotificationChannel.objects.get().secret
    assert "s3cr3t" not in token
    assert decrypt(token) == "s3cr3t"
    listed = api.get(CHANNELS).json()["results"]
    assert [(c["name"], c["has_secret"]) for c in listed] == [("hook", True)]
    assert "secret" not in listed[0]


def test_it_keeps_replaces_and_clears_a_channels_secret(api: APIClient) -> None:
    channel = make_channel(secret=encrypt("one"))
    token = channel.secret
    path = f"{CHANNELS}{channel.pk}/"

    assert api.patch(path, {"enabled": False}).json()["has_secret"] is True
    full = {"name": "hook", "kind": "webhook", "target": "https://x.test/h2"}
    assert api.put(path, full).status_code == 200  # PUT without it keeps it too
    assert NotificationChannel.objects.get().secret == token

    assert api.patch(path, {"secret": "two"}).json()["has_secret"] is True
    assert decrypt(NotificationChannel.objects.get().secret) == "two"

    assert api.patch(path, {"secret": None}).json()["has_secret"] is False
    assert NotificationChannel.objects.get().secret == ""
    api.patch(path, {"secret": "three"})
    assert api.patch(path, {"secret": ""}).json()["has_secret"] is False


@pytest.mark.parametrize(
    ("kind", "target", "message"),
    [
        ("webhook", "hooks.example.com/k", "Enter an http:// or https:// URL"),
        ("slack", "not a url", "Enter an http:// or https:// URL"),
        ("email", "a@example.com; b@example.com", "is not an email address"),
        ("email", " , ", "Enter at least one email address."),
    ],
)
def test_it_refuses_a_target_the_channels_kind_cannot_send_to(
    api: APIClient, kind: str, target: str, message: str
) -> None:
    response = api.post(CHANNELS, {"name": "ops", "kind": kind, "target": target})

    assert response.status_code == 400
    assert message in response.json()["target"][0]
    assert not NotificationChannel.objects.exists()


def test_it_checks_a_changed_target_but_keeps_one_stored_before_the_check(
    api: APIClient,
) -> None:
    channel = make_channel(target="alerts")  # stored before clean() existed
    path = f"{CHANNELS}{channel.pk}/"

    assert api.patch(path, {"enabled": False}).status_code == 200
    response = api.patch(path, {"target": "still-not-a-url"})

    assert response.status_code == 400
    assert "http:// or https://" in response.json()["target"][0]
    assert NotificationChannel.objects.get().target == "alerts"


def test_it_refuses_a_secret_on_a_channel_that_does_not_sign(api: APIClient) -> None:
    response = api.post(
        CHANNELS,
        {"name": "ops", "kind": "email", "target": "ops@example.com", "secret": "x"},
    )

    assert response.status_code == 400
    assert "Only webhook channels sign" in response.json()["secret"][0]
    assert not NotificationChannel.objects.exists()


def test_it_makes_a_signed_webhook_another_kind_only_with_its_secret_removed(
    api: APIClient,
) -> None:
    channel = make_channel(secret=encrypt("one"))
    path = f"{CHANNELS}{channel.pk}/"
    slack = {"kind": "slack", "target": "https://hooks.slack.example/x"}

    refused = api.patch(path, slack)
    assert refused.status_code == 400
    assert "send null to remove" in refused.json()["secret"][0]
    assert NotificationChannel.objects.get().kind == "webhook"

    done = api.patch(path, {**slack, "secret": None})
    assert done.status_code == 200, done.json()
    assert (done.json()["kind"], done.json()["has_secret"]) == ("slack", False)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"secret": "x" * 201}, "secret", "no more than 200 characters"),
        ({"name": "taken"}, "name", "already exists"),
        ({"name": ""}, "name", "may not be blank"),
        ({"kind": "pager"}, "kind", "not a valid choice"),
    ],
)
def test_it_refuses_bad_channel_fields_by_name(
    api: APIClient, data: dict[str, Any], field: str, message: str
) -> None:
    make_channel("taken")
    body = {"name": "new", "kind": "webhook", "target": "https://x.test/h", **data}

    response = api.post(CHANNELS, body)

    assert response.status_code == 400
    assert message in str(response.json()[field])
    assert NotificationChannel.objects.count() == 1


def test_it_filters_channels_by_kind_and_enabled(api: APIClient) -> None:
    make_channel("hook")
    make_channel("mail", kind="email", target="ops@example.com", enabled=False)

    def names(query: str) -> list[str]:
        return [c["name"] for c in api.get(f"{CHANNELS}?{query}").json()["results"]]

    assert names("") == ["hook", "mail"]
    assert names("kind=email") == ["mail"]
    assert names("enabled=true") == ["hook"]
    assert api.get(f"{CHANNELS}?enabled=maybe").status_code == 400


def test_it_answers_404_for_a_channel_deleted_while_its_edit_was_saved(
    api: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = make_channel()
    real = NotificationChannelSerializer.validate

    def deleted_meanwhile(self: Any, attrs: dict[str, Any]) -> dict[str, Any]:
        NotificationChannel.objects.filter(pk=channel.pk).delete()
        return real(self, attrs)

    monkeypatch.setattr(NotificationChannelSerializer, "validate", deleted_meanwhile)
    response = api.patch(f"{CHANNELS}{channel.pk}/", {"name": "renamed"})

    assert response.status_code == 404
    assert "was deleted meanwhile" in response.json()["detail"]
    assert not NotificationChannel.objects.exists()  # not brought back


@pytest.mark.django_db(transaction=True)
def test_it_keeps_a_channel_deleted_by_a_concurrent_request_deleted(
    admin_user: User,
) -> None:
    """The race itself, on PostgreSQL: the delete commits while the edit is in its
    service call."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL: SQLite serialises writers, no race")
    channel = make_channel()
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_token(admin_user).key}")

    answer = race(
        "jobs.services.notification_config.notification_channel_update",
        lambda: client.patch(f"{CHANNELS}{channel.pk}/", {"name": "renamed"}),
        meanwhile=lambda: NotificationChannel.objects.filter(pk=channel.pk).delete(),
    )

    assert answer.status_code == 404, answer.content
    assert not NotificationChannel.objects.exists()


def test_it_queues_a_test_message_to_a_channel(
    api: APIClient,
    no_broker: mock.MagicMock,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    channel = make_channel()

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"{CHANNELS}{channel.pk}/test/")

    assert response.status_code == 202, response.json()
    body = response.json()
    assert (body["event"], body["status"], body["job"]) == ("test", "pending", None)
    assert body["payload"]["test"] is True
    assert "sent by admin" in body["payload"]["execution"]["reason"]
    no_broker.assert_called_once_with(body["id"])
    assert api.get(f"{DELIVERIES}{body['id']}/").json()["channel_name"] == "hook"


def test_it_refuses_a_test_message_to_a_disabled_channel(api: APIClient) -> None:
    channel = make_channel(enabled=False)

    response = api.post(f"{CHANNELS}{channel.pk}/test/")

    assert response.status_code == 409
    assert "is disabled" in response.json()["detail"]
    assert not NotificationDelivery.objects.exists()


def test_it_takes_the_channels_change_permission_to_write_or_test_it(
    make_user: Callable[..., User],
) -> None:
    channel = make_channel()
    reader = client_for(make_user("reader", perms=["jobs.view_notificationchannel"]))

    assert reader.get(CHANNELS).status_code == 200
    assert reader.post(f"{CHANNELS}{channel.pk}/test/").status_code == 403
    assert reader.patch(f"{CHANNELS}{channel.pk}/", {"name": "x"}).status_code == 403
    assert reader.delete(f"{CHANNELS}{channel.pk}/").status_code == 403
    assert not NotificationDelivery.objects.exists()
    assert NotificationChannel.objects.get().name == "hook"


# --- Rules ---------------------------------------------------------------------------


def test_it_creates_rules_for_an_app_or_for_a_job(
    api: APIClient, make_app: Callable[..., App], make_job: Callable[..., Job]
) -> None:
    channel = make_channel()
    app = make_app("ops")
    job = make_job(app=app, name="backup")

    for_app = api.post(
        RULES, {"channel": channel.pk, "app": "ops", "events": ["failure", "late"]}
    )
    for_job = api.post(
        RULES,
        {"channel": channel.pk, "job": job.pk, "events": ["slow", "slow", "failure"],
         "slow_factor": 2.5, "repeat_every": "00:15:00"},
    )  # fmt: skip

    assert for_app.status_code == 201, for_app.json()
    assert for_app.json() == {
        "id": for_app.json()["id"],
        "channel": channel.pk,
        "channel_name": "hook",
        "app": "ops",
        "job": None,
        "events": ["failure", "late"],
        "slow_factor": None,
        "repeat_every": "01:00:00",  # the model's default
    }
    assert for_job.status_code == 201, for_job.json()
    stored = NotificationRule.objects.get(job=job)
    assert stored.events == ["slow", "failure"]  # each once, in the order sent
    assert (stored.slow_factor, stored.repeat_every) == (2.5, timedelta(minutes=15))


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({}, "non_field_errors", "send `app` (a name) or `job` (an id)."),
        ({"app": "ops", "job": "JOB"}, "non_field_errors", "and the other null"),
        ({"app": "nope"}, "app", "does not exist"),
        ({"job": 999999}, "job", "does not exist"),
        ({"app": "ops", "events": ["failure", "boom"]}, "events", "not a valid"),
        ({"app": "ops", "events": []}, "events", "may not be empty"),
        ({"app": "ops", "channel": 999999}, "channel", "does not exist"),
        ({"app": "ops", "slow_factor": 0.5}, "slow_factor", "greater than or equal"),
        ({"app": "ops", "repeat_every": "30 00:00:01"}, "repeat_every",
         "from 0 (send every failure) to 30 days"),
        ({"app": "ops", "repeat_every": "-00:00:01"}, "repeat_every",
         "from 0 (send every failure) to 30 days"),
        ({"app": "ops", "repeat_every": "an hour"}, "repeat_every",
         "Enter a duration such as 01:00:00"),
        ({"app": "ops", "repeat_every": "999999999999 00:00:00"}, "repeat_every",
         "number of days must be between"),
    ],
)  # fmt: skip
def test_it_refuses_a_bad_rule_saying_what_is_wrong(
    api: APIClient,
    make_app: Callable[..., App],
    make_job: Callable[..., Job],
    data: dict[str, Any],
    field: str,
    message: str,
) -> None:
    channel = make_channel()
    job = make_job(app=make_app("ops"))
    body = {"channel": channel.pk, "events": ["failure"], **data}
    if body.get("job") == "JOB":
        body["job"] = job.pk

    response = api.post(RULES, body)

    assert response.status_code == 400
    assert message in str(response.json()[field]), response.json()
    assert not NotificationRule.objects.exists()


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("0", timedelta(0)),
        ("3600", timedelta(hours=1)),
        ("PT30M", timedelta(minutes=30)),
        ("30 00:00:00", timedelta(days=30)),
    ],
)
def test_it_takes_repeat_every_as_the_model_allows(
    api: APIClient, make_app: Callable[..., App], value: str, stored: timedelta
) -> None:
    channel = make_channel()
    make_app("ops")

    response = api.post(
        RULES,
        {"channel": channel.pk, "app": "ops", "events": ["failure"],
         "repeat_every": value},
    )  # fmt: skip

    assert response.status_code == 201, response.json()
    assert NotificationRule.objects.get().repeat_every == stored


def test_it_moves_a_rule_from_its_app_to_a_job(
    api: APIClient, make_app: Callable[..., App], make_job: Callable[..., Job]
) -> None:
    app = make_app("ops")
    job = make_job(app=app)
    rule = NotificationRule.objects.create(
        channel=make_channel(), app=app, events=["failure"]
    )
    path = f"{RULES}{rule.pk}/"

    both = api.patch(path, {"job": job.pk})
    assert both.status_code == 400
    assert "and the other null" in both.json()["non_field_errors"][0]

    moved = api.patch(path, {"job": job.pk, "app": None})
    assert moved.status_code == 200, moved.json()
    rule.refresh_from_db()
    assert (rule.app_id, rule.job_id) == (None, job.pk)


def test_it_answers_404_for_a_rule_deleted_while_its_edit_was_saved(
    api: APIClient, make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    rule = NotificationRule.objects.create(
        channel=make_channel(), app=make_app("ops"), events=["failure"]
    )
    real = NotificationRuleSerializer.validate

    def deleted_meanwhile(self: Any, attrs: dict[str, Any]) -> dict[str, Any]:
        NotificationRule.objects.filter(pk=rule.pk).delete()
        return real(self, attrs)

    monkeypatch.setattr(NotificationRuleSerializer, "validate", deleted_meanwhile)
    response = api.patch(f"{RULES}{rule.pk}/", {"events": ["late"]})

    assert response.status_code == 404
    assert f"Notification rule #{rule.pk} was deleted" in response.json()["detail"]
    assert not NotificationRule.objects.exists()


def test_it_answers_404_for_a_rule_whose_channel_went_while_it_was_made(
    api: APIClient, make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = make_channel()
    make_app("ops")
    real = NotificationRuleSerializer.validate

    def deleted_meanwhile(self: Any, attrs: dict[str, Any]) -> dict[str, Any]:
        NotificationChannel.objects.filter(pk=channel.pk).delete()
        return real(self, attrs)

    monkeypatch.setattr(NotificationRuleSerializer, "validate", deleted_meanwhile)
    response = api.post(
        RULES, {"channel": channel.pk, "app": "ops", "events": ["failure"]}
    )

    assert response.status_code == 404
    assert "Notification channel 'hook' was deleted" in response.json()["detail"]
    assert not NotificationRule.objects.exists()


def test_it_lists_rules_filtered_in_few_queries(
    api: APIClient,
    make_app: Callable[..., App],
    make_job: Callable[..., Job],
    django_assert_num_queries: Callable[..., Any],
) -> None:
    hook, mail = make_channel("hook"), make_channel("mail")
    ops = make_app("ops")
    for _ in range(5):
        NotificationRule.objects.create(
            channel=hook, job=make_job(app=ops), events=["failure"]
        )
    NotificationRule.objects.create(channel=mail, app=ops, events=["late"])

    # Token and its user, the count, the page (channel, app and job joined).
    with django_assert_num_queries(4):
        rules = api.get(RULES).json()
    assert rules["count"] == 6
    by_channel = api.get(f"{RULES}?channel={mail.pk}").json()["results"]
    assert [(r["channel_name"], r["app"]) for r in by_channel] == [("mail", "ops")]
    assert api.get(f"{RULES}?app=ops").json()["count"] == 1
    assert api.get(f"{RULES}?channel=abc").status_code == 400


# --- Per-app access ------------------------------------------------------------------


@pytest.fixture
def member(
    make_user: Callable[..., User], make_app: Callable[..., App], settings: Any
) -> APIClient:
    """A user granted the app "mine" only, with every notification permission."""
    settings.KARMCHARI_PER_APP_ACCESS = True
    perms = [
        f"jobs.{verb}_{model}"
        for model in ("notificationchannel", "notificationrule")
        for verb in ("view", "add", "change", "delete")
    ]
    user = make_user(
        perms=[*perms, "jobs.view_notificationdelivery"], apps=[make_app("mine")]
    )
    make_app("theirs")
    return client_for(user)


def test_it_shows_and_takes_only_rules_of_the_callers_apps(
    member: APIClient, make_job: Callable[..., Job]
) -> None:
    channel = make_channel()
    mine, theirs = App.objects.get(name="mine"), App.objects.get(name="theirs")
    my_job, their_job = make_job(app=mine), make_job(app=theirs)
    visible = [
        NotificationRule.objects.create(channel=channel, app=mine, events=["failure"]),
        NotificationRule.objects.create(channel=channel, job=my_job, events=["late"]),
    ]
    hidden = [
        NotificationRule.objects.create(channel=channel, app=theirs, events=["slow"]),
        NotificationRule.objects.create(
            channel=channel, job=their_job, events=["start"]
        ),
    ]

    listed = [r["id"] for r in member.get(RULES).json()["results"]]
    assert listed == [rule.pk for rule in visible]
    for rule in hidden:
        assert member.get(f"{RULES}{rule.pk}/").status_code == 404
        assert (
            member.patch(f"{RULES}{rule.pk}/", {"events": ["failure"]}).status_code
            == 404
        )
        assert member.delete(f"{RULES}{rule.pk}/").status_code == 404
    base = {"channel": channel.pk, "events": ["failure"]}
    assert "does not exist" in str(member.post(RULES, {**base, "app": "theirs"}).json())
    assert "does not exist" in str(
        member.post(RULES, {**base, "job": their_job.pk}).json()
    )
    moved = member.patch(f"{RULES}{visible[0].pk}/", {"app": "theirs"})
    assert moved.status_code == 400
    assert member.get(f"{RULES}?job={their_job.pk}").status_code == 400
    assert NotificationRule.objects.count() == 4
    assert NotificationRule.objects.get(pk=visible[0].pk).app == mine
    made = member.post(RULES, {**base, "job": my_job.pk})
    assert made.status_code == 201, made.json()


def test_it_refuses_a_restricted_user_deleting_a_channel_other_apps_use(
    member: APIClient,
) -> None:
    shared, own = make_channel("shared"), make_channel("own")
    NotificationRule.objects.create(
        channel=shared, app=App.objects.get(name="theirs"), events=["failure"]
    )
    NotificationRule.objects.create(
        channel=own, app=App.objects.get(name="mine"), events=["failure"]
    )

    refused = member.delete(f"{CHANNELS}{shared.pk}/")
    assert refused.status_code == 403
    assert "rules of apps you cannot see" in refused.json()["detail"]
    assert member.delete(f"{CHANNELS}{own.pk}/").status_code == 204
    assert list(NotificationChannel.objects.values_list("name", flat=True)) == [
        "shared"
    ]
    assert NotificationRule.objects.count() == 1


# --- The delivery log ----------------------------------------------------------------


def _delivery(
    channel: NotificationChannel, job: Job | None, **fields: Any
) -> NotificationDelivery:
    fields.setdefault("event", "failure")
    fields.setdefault("status", "sent")
    return NotificationDelivery.objects.create(channel=channel, job=job, **fields)


def test_it_lists_deliveries_newest_first_in_few_queries(
    api: APIClient,
    make_job: Callable[..., Job],
    django_assert_num_queries: Callable[..., Any],
) -> None:
    channel = make_channel()
    job = make_job(name="backup")
    made = [_delivery(channel, job, payload={"n": n}) for n in range(3)]

    # Token and its user, the page (channel, job and app joined).
    with django_assert_num_queries(3):
        page = api.get(DELIVERIES).json()

    assert [d["id"] for d in page["results"]] == [d.pk for d in reversed(made)]
    first = page["results"][0]
    assert (first["channel_name"], first["job_name"], first["app"]) == (
        "hook",
        "backup",
        "default",
    )
    assert first["payload"] == {"n": 2}
    one = api.get(f"{DELIVERIES}?page_size=1").json()
    assert [d["id"] for d in one["results"]] == [made[2].pk]
    following = api.get(one["next"]).json()
    assert [d["id"] for d in following["results"]] == [made[1].pk]


def test_it_filters_deliveries_by_channel_job_status_and_event(
    api: APIClient, make_job: Callable[..., Job]
) -> None:
    hook, mail = make_channel("hook"), make_channel("mail")
    backup, report = make_job(name="backup"), make_job(name="report")
    failed = _delivery(hook, backup, status="failed")
    held = _delivery(hook, report, status="held", event="late")
    sent = _delivery(mail, backup, status="sent", event="recovery")
    orphan = _delivery(mail, None, event="test")

    def ids(query: str) -> set[int]:
        return {d["id"] for d in api.get(f"{DELIVERIES}?{query}").json()["results"]}

    assert ids(f"channel={mail.pk}") == {sent.pk, orphan.pk}
    assert ids(f"job={backup.pk}") == {failed.pk, sent.pk}
    assert ids("status=failed&status=held") == {failed.pk, held.pk}
    assert ids("event=late") == {held.pk}
    assert ids("event=test") == {orphan.pk}
    assert ids("created_after=2000-01-01T00:00:00Z") == {
        failed.pk,
        held.pk,
        sent.pk,
        orphan.pk,
    }
    for bad in ("status=lost", "event=boom", "job=abc", "created_after=soon"):
        assert api.get(f"{DELIVERIES}?{bad}").status_code == 400, bad


def test_it_keeps_the_delivery_log_read_only(api: APIClient) -> None:
    delivery = _delivery(make_channel(), None)

    assert api.post(DELIVERIES, {"event": "failure"}).status_code == 405
    assert (
        api.patch(f"{DELIVERIES}{delivery.pk}/", {"status": "sent"}).status_code == 405
    )
    assert api.delete(f"{DELIVERIES}{delivery.pk}/").status_code == 405
    assert NotificationDelivery.objects.count() == 1


def test_it_shows_a_restricted_user_the_deliveries_of_their_apps_and_tests(
    member: APIClient, make_job: Callable[..., Job]
) -> None:
    channel = make_channel()
    mine = _delivery(channel, make_job(app=App.objects.get(name="mine")))
    theirs = _delivery(channel, make_job(app=App.objects.get(name="theirs")))
    test = _delivery(channel, None, event="test")
    _delivery(channel, None)  # its job deleted since: whose it was is unknown

    listed = {d["id"] for d in member.get(DELIVERIES).json()["results"]}

    assert listed == {mine.pk, test.pk}
    assert member.get(f"{DELIVERIES}{theirs.pk}/").status_code == 404


def test_it_documents_the_notification_endpoints_in_a_valid_schema(
    api: APIClient,
) -> None:
    from drf_spectacular.validation import validate_schema

    schema = api.get("/api/schema/?format=json").json()

    validate_schema(schema)
    paths = schema["paths"]
    assert "/api/notification-channels/{id}/test/" in paths
    assert "/api/notification-rules/{id}/" in paths
    assert "get" in paths["/api/notification-deliveries/"]
    assert "post" not in paths["/api/notification-deliveries/"]
    channel = schema["components"]["schemas"]["NotificationChannel"]["properties"]
    assert "secret" not in channel  # write-only: only in the request component
    assert (
        "secret"
        in schema["components"]["schemas"]["NotificationChannelRequest"]["properties"]
    )


@override_settings(KARMCHARI_PER_APP_ACCESS=False)
def test_it_refuses_anonymous_notification_requests(anon: APIClient) -> None:
    for path in (CHANNELS, RULES, DELIVERIES):
        assert anon.get(path).status_code == 401
