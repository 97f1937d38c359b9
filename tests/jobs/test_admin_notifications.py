"""The operator console's notification pages (jobs/admin/notifications.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.http import HttpResponse
from django.test import Client

from jobs.models import App

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
        {"channel": channel.pk, "app": app.pk, "events": ["failure", "late"]},
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
             "slow_factor": factor},
        )  # fmt: skip
        assert response.status_code == 200
        assert "greater than or equal to 1" in response.content.decode()
    assert not NotificationRule.objects.exists()
    response = admin_client.post(
        "/admin/jobs/notificationrule/add/",
        {"channel": channel.pk, "app": app.pk, "events": ["slow"], "slow_factor": "2"},
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
