"""The operator console's notification pages (jobs/admin/notifications.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
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
