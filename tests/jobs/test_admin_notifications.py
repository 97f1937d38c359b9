"""The operator console's notification pages (jobs/admin/notifications.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpResponse
from django.test import Client

from jobs.admin.notifications import NotificationChannelAdmin, NotificationRuleAdmin
from jobs.models import (
    App,
    NotificationChannel,
    NotificationDelivery,
    NotificationRule,
)
from jobs.secrets import decrypt, encrypt
from tests.jobs.test_races import race
from tests.receiver import Receiver

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]


def test_it_configures_notifications_in_the_admin(
    admin_client: Client, make_app: Callable[..., App]
) -> None:
    from jobs.models import NotificationChannel, NotificationRule

    app = make_app("ops")
    response = admin_client.post(
        "/admin/jobs/notificationchannel/add/",
        {
            "name": "hook",
            "kind": "webhook",
            "target": "https://x.test/h",
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    channel = NotificationChannel.objects.get()
    response = admin_client.post(
        "/admin/jobs/notificationrule/add/",
        {
            "channel": channel.pk,
            "app": app.pk,
            "events": ["failure", "late"],
            "repeat_every": "01:00:00",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    assert NotificationRule.objects.get().events == ["failure", "late"]
    assert admin_client.get("/admin/jobs/notificationdelivery/").status_code == 200


def test_it_refuses_a_slow_factor_below_one(
    admin_client: Client, make_app: Callable[..., App]
) -> None:
    """Below 1 most runs would be "slow"; below 0, every one."""
    from jobs.models import NotificationChannel, NotificationRule

    channel = NotificationChannel.objects.create(
        name="hook", kind="webhook", target="https://x.test/h"
    )
    app = make_app("ops")
    for factor in ("-1", "0.5"):
        response = admin_client.post(
            "/admin/jobs/notificationrule/add/",
            {"channel": channel.pk, "app": app.pk, "events": ["slow"],
             "slow_factor": factor, "repeat_every": "01:00:00"},
        )  # fmt: skip
        assert response.status_code == 200
        assert "greater than or equal to 1" in response.content.decode()
    assert not NotificationRule.objects.exists()
    response = admin_client.post(
        "/admin/jobs/notificationrule/add/",
        {
            "channel": channel.pk,
            "app": app.pk,
            "events": ["slow"],
            "slow_factor": "2",
            "repeat_every": "01:00:00",
        },
        follow=True,
    )
    assert "slow -&gt; hook" in response.content.decode()  # its channel, by name


@pytest.mark.parametrize(
    ("kind", "target", "message", "fixed"),
    [
        ("webhook", "hooks.example.com/k", "Enter an http:// or https:// URL",
         "https://hooks.example.com/k"),
        ("webhook", "ops@example.com", "Enter an http:// or https:// URL",
         "http://alerts:9093/hook"),  # a receiver on the same network
        ("slack", "not a url", "Enter an http:// or https:// URL",
         "https://hooks.slack.example/x"),
        ("email", "ops at example dot com", "is not an email address",
         "ops@example.com"),
        ("email", "a@example.com; b@example.com", "is not an email address",
         "a@example.com, b@example.com"),
    ],
)  # fmt: skip
def test_it_refuses_a_channel_target_its_kind_cannot_send_to(
    admin_client: Client, kind: str, target: str, message: str, fixed: str
) -> None:
    from jobs.models import NotificationChannel

    def add(target: str) -> HttpResponse:
        return admin_client.post(
            "/admin/jobs/notificationchannel/add/",
            {"name": "ops", "kind": kind, "target": target, "enabled": "on"},
        )

    response = add(target)
    assert response.status_code == 200
    assert message in str(response.context["adminform"].form.errors["target"])
    assert not NotificationChannel.objects.exists()
    assert add(fixed).status_code == 302
    assert NotificationChannel.objects.get().target == fixed


def _deleted_before_save(
    monkeypatch: pytest.MonkeyPatch, model_admin: type[Any], rows: QuerySet[Any]
) -> None:
    """Someone else deletes `rows` after the page's request read them, before it
    saves (inside the page's transaction: its rollback brings them back)."""
    real_save_form = model_admin.save_form

    def deleted_meanwhile(self: Any, *args: Any, **kwargs: Any) -> Any:
        rows.delete()
        return real_save_form(self, *args, **kwargs)

    monkeypatch.setattr(model_admin, "save_form", deleted_meanwhile)


def _messages(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_it_does_not_bring_back_a_channel_deleted_while_its_page_was_saved(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = NotificationChannel.objects.create(
        name="hook", kind="webhook", target="https://x.test/h"
    )
    _deleted_before_save(
        monkeypatch,
        NotificationChannelAdmin,
        NotificationChannel.objects.filter(pk=channel.pk),
    )

    response = admin_client.post(
        f"/admin/jobs/notificationchannel/{channel.pk}/change/",
        {"name": "renamed", "kind": "webhook", "target": "https://x.test/h"},
        follow=True,
    )

    assert response.redirect_chain[-1][0] == "/admin/jobs/notificationchannel/"
    assert _messages(response) == [
        "Notification channel 'renamed' was deleted by someone else while you were "
        "editing it. Your changes were not saved."
    ]
    # Django's save() found no row to update and inserted it again, as edited. Here
    # the page's transaction was rolled back, the simulated delete with it.
    stored = NotificationChannel.objects.get()
    assert (stored.name, stored.enabled) == ("hook", True)


def test_it_does_not_bring_back_a_rule_deleted_while_its_page_was_saved(
    admin_client: Client,
    make_app: Callable[..., App],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    channel = NotificationChannel.objects.create(
        name="hook", kind="webhook", target="https://x.test/h"
    )
    rule = NotificationRule.objects.create(
        channel=channel, app=make_app("ops"), events=["failure"]
    )
    _deleted_before_save(
        monkeypatch, NotificationRuleAdmin, NotificationRule.objects.filter(pk=rule.pk)
    )

    response = admin_client.post(
        f"/admin/jobs/notificationrule/{rule.pk}/change/",
        {
            "channel": channel.pk,
            "app": rule.app_id,
            "events": ["late"],
            "repeat_every": "01:00:00",
        },
        follow=True,
    )

    assert response.redirect_chain[-1][0] == "/admin/jobs/notificationrule/"
    assert _messages(response) == [
        "Notification rule 'late -> hook' was deleted by someone else while you were "
        "editing it. Your changes were not saved."
    ]
    assert NotificationRule.objects.get().events == ["failure"]


@pytest.mark.django_db(transaction=True)
def test_it_keeps_a_channel_deleted_by_a_concurrent_request_deleted(
    admin_user: User,
) -> None:
    """The race itself, on PostgreSQL (SQLite's IMMEDIATE transactions keep the
    delete out of the page's): the delete commits between the page's read of the
    channel and its save."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL: SQLite serialises writers, no race")
    channel = NotificationChannel.objects.create(
        name="hook", kind="webhook", target="https://x.test/h"
    )
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)

    answer = race(
        "jobs.admin.base.lock_stored",
        lambda: client.post(
            f"/admin/jobs/notificationchannel/{channel.pk}/change/",
            {"name": "renamed", "kind": "webhook", "target": "https://x.test/h"},
        ),
        meanwhile=lambda: NotificationChannel.objects.filter(pk=channel.pk).delete(),
    )

    assert answer.status_code == 302
    assert answer["Location"] == "/admin/jobs/notificationchannel/"
    assert not NotificationChannel.objects.exists()


def _rule_page(admin_client: Client, app: App, repeat_every: str) -> HttpResponse:
    channel, _ = NotificationChannel.objects.get_or_create(
        name="hook", kind="webhook", target="https://x.test/h"
    )
    return admin_client.post(
        "/admin/jobs/notificationrule/add/",
        {
            "channel": channel.pk,
            "app": app.pk,
            "events": ["failure"],
            "repeat_every": repeat_every,
        },
    )


def test_it_shows_a_new_rules_repeat_every_of_an_hour(admin_client: Client) -> None:
    response = admin_client.get("/admin/jobs/notificationrule/add/")

    assert 'name="repeat_every" value="01:00:00"' in response.content.decode()


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("00:15:00", timedelta(minutes=15)),
        ("3600", timedelta(hours=1)),
        ("1 00:00:00", timedelta(days=1)),
        ("0", timedelta(0)),
        ("30 00:00:00", timedelta(days=30)),
    ],
)
def test_it_sets_a_rules_repeat_every(
    admin_client: Client, make_app: Callable[..., App], value: str, stored: timedelta
) -> None:
    response = _rule_page(admin_client, make_app("ops"), value)

    assert response.status_code == 302, response.content[:2000]
    assert NotificationRule.objects.get().repeat_every == stored
    listing = admin_client.get("/admin/jobs/notificationrule/").content.decode()
    assert "Repeat every" in listing


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-00:00:01", "Enter a duration from 0 (send every failure) to 30 days"),
        ("30 00:00:01", "Enter a duration from 0 (send every failure) to 30 days"),
        ("an hour", "Enter a duration such as 01:00:00 (an hour)"),
        ("", "This field is required."),
    ],
)
def test_it_refuses_a_repeat_every_out_of_range_or_unreadable(
    admin_client: Client, make_app: Callable[..., App], value: str, message: str
) -> None:
    response = _rule_page(admin_client, make_app("ops"), value)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in str(errors["repeat_every"]), errors
    assert not NotificationRule.objects.exists()


def test_it_lists_held_back_deliveries_in_the_delivery_log(
    admin_client: Client, make_app: Callable[..., App], make_job: Callable[..., Any]
) -> None:
    """What flood control held back stays visible: the log filters on it."""
    from jobs.models import NotificationDelivery

    job = make_job(app=make_app("ops"), name="backup")
    channel = NotificationChannel.objects.create(
        name="hook", kind="webhook", target="https://x.test/h"
    )
    for status in ("sent", "held"):
        NotificationDelivery.objects.create(
            channel=channel, job=job, event="failure", status=status
        )

    response = admin_client.get("/admin/jobs/notificationdelivery/?status=held")

    assert response.status_code == 200
    assert [d.status for d in response.context["cl"].result_list] == ["held"]
    assert "Held back" in response.content.decode()


# --- The channel's secret: write-only ------------------------------------------------


def _channel_page(admin_client: Client, pk: int | None = None, **data: Any) -> Any:
    data = {
        "name": "hook",
        "kind": "webhook",
        "target": "https://x.test/h",
        "enabled": "on",
        **data,
    }
    page = f"{pk}/change" if pk else "add"
    path = f"/admin/jobs/notificationchannel/{page}/"
    return admin_client.post(path, data)


def test_it_stores_a_channel_secret_set_in_the_admin_encrypted(
    admin_client: Client,
) -> None:
    response = _channel_page(admin_client, new_secret="s3cr3t-key")

    assert response.status_code == 302, response.content[:2000]
    token = NotificationChannel.objects.get().secret
    assert "s3cr3t-key" not in token
    assert decrypt(token) == "s3cr3t-key"


def test_it_never_shows_a_channel_secret_back(admin_client: Client) -> None:
    channel = NotificationChannel.objects.create(
        name="hook",
        kind="webhook",
        target="https://x.test/h",
        secret=encrypt("k3y!"),
        enabled=False,
    )

    page = admin_client.get(f"/admin/jobs/notificationchannel/{channel.pk}/change/")
    listing = admin_client.get("/admin/jobs/notificationchannel/")

    html = page.content.decode()
    assert "Set (stored encrypted, never shown)" in html
    assert "k3y!" not in html
    assert channel.secret not in html  # not even the token
    assert 'name="new_secret"' in html
    assert 'autocomplete="new-password"' in html
    columns = listing.content.decode()
    assert "Signed" in columns
    assert 'alt="True"' in columns  # signed (the only true column: it is disabled)


def test_it_keeps_replaces_and_clears_a_channel_secret(admin_client: Client) -> None:
    channel = NotificationChannel.objects.create(
        name="hook", kind="webhook", target="https://x.test/h", secret=encrypt("one")
    )
    token = channel.secret

    assert _channel_page(admin_client, channel.pk, name="renamed").status_code == 302
    assert NotificationChannel.objects.get().secret == token  # kept as it was

    assert _channel_page(admin_client, channel.pk, new_secret="two").status_code == 302
    assert decrypt(NotificationChannel.objects.get().secret) == "two"

    assert _channel_page(admin_client, channel.pk, clear_secret="on").status_code == 302
    assert NotificationChannel.objects.get().secret == ""
    page = admin_client.get(f"/admin/jobs/notificationchannel/{channel.pk}/change/")
    assert "Not set" in page.content.decode()


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"new_secret": "two", "clear_secret": "on"}, "new_secret", "not both"),
        (
            {"kind": "slack", "target": "https://hooks.slack.example/x"},
            "clear_secret",
            "tick this to remove the secret",
        ),
        (
            {"kind": "slack", "new_secret": "two"},
            "new_secret",
            "Only webhook channels sign their requests",
        ),
        ({"new_secret": "x" * 201}, "new_secret", "at most 200 characters"),
    ],
)
def test_it_refuses_a_channel_secret_it_cannot_keep_as_asked(
    admin_client: Client, data: dict[str, str], field: str, message: str
) -> None:
    channel = NotificationChannel.objects.create(
        name="hook", kind="webhook", target="https://x.test/h", secret=encrypt("one")
    )

    response = _channel_page(admin_client, channel.pk, **data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in str(errors[field]), errors
    stored = NotificationChannel.objects.get()
    assert (stored.kind, decrypt(stored.secret)) == ("webhook", "one")


def test_it_changes_a_signed_webhook_to_slack_when_its_secret_is_removed(
    admin_client: Client,
) -> None:
    channel = NotificationChannel.objects.create(
        name="hook", kind="webhook", target="https://x.test/h", secret=encrypt("one")
    )

    response = _channel_page(
        admin_client,
        channel.pk,
        kind="slack",
        target="https://hooks.slack.example/x",
        clear_secret="on",
    )

    assert response.status_code == 302, response.content[:2000]
    stored = NotificationChannel.objects.get()
    assert (stored.kind, stored.secret) == ("slack", "")


def test_it_sends_a_test_message_to_the_selected_channels(
    admin_client: Client,
    receiver: Receiver,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """Queued for a worker like any notification; a disabled channel is left out,
    saying why."""
    hook = NotificationChannel.objects.create(
        name="hook", kind="webhook", target=receiver.url
    )
    off = NotificationChannel.objects.create(
        name="off", kind="webhook", target=receiver.url, enabled=False
    )
    with (
        mock.patch("jobs.tasks.deliver_notification.delay") as send,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = admin_client.post(
            "/admin/jobs/notificationchannel/",
            {"action": "send_test", "_selected_action": [hook.pk, off.pk]},
            follow=True,
        )
    said = _messages(response)
    assert any("'off' is disabled" in m and "Left out." in m for m in said)
    assert any("Queued a test message to 1 channel(s)" in m for m in said)
    [delivery] = NotificationDelivery.objects.all()
    assert (delivery.channel, delivery.event, delivery.status) == (
        hook,
        "test",
        "pending",
    )
    assert delivery.payload["execution"]["reason"].endswith("this channel works.")
    send.assert_called_once_with(delivery.pk)


def test_it_offers_the_test_message_only_to_who_may_change_channels(
    client: Client, django_user_model: type[User]
) -> None:
    viewer = django_user_model.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(
        Permission.objects.get(codename="view_notificationchannel")
    )
    client.force_login(viewer)
    page = client.get("/admin/jobs/notificationchannel/")
    assert page.status_code == 200
    assert b"send_test" not in page.content
