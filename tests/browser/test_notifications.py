"""Notification channels as an operator meets them in the admin, in a real browser:
a webhook's signing secret typed once is never shown again, and the list's test
message action reaches the webhook, signed, from a real worker."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from jobs import secrets
from jobs.models import NotificationChannel
from tests.browser.conftest import PASSWORD, SKIP_REASON
from tests.integration.conftest import Processes
from tests.receiver import Receiver
from tests.waiting import wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Page

expect = pytest.importorskip("playwright.sync_api", reason=SKIP_REASON).expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_keeps_a_channel_secret_hidden_and_sends_a_signed_test_message(
    page: Page, processes: Processes, receiver: Receiver, screenshots: Path
) -> None:
    # Deliveries go to Celery's default queue.
    processes.worker("celery", name="notify")
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")

    page.goto("/admin/jobs/notificationchannel/add/")
    page.fill("#id_name", "ops-hook")
    page.select_option("#id_kind", "webhook")
    page.fill("#id_target", receiver.url)
    page.fill("#id_new_secret", "br0wser-s3cret")
    page.click("input[name=_continue]")
    expect(page.locator("ul.messagelist")).to_contain_text("was added successfully")

    channel = NotificationChannel.objects.get(name="ops-hook")
    assert secrets.decrypt(channel.secret) == "br0wser-s3cret"
    expect(page.locator(".field-secret_status")).to_contain_text("Set (stored")
    expect(page.locator("#id_new_secret")).to_have_value("")
    assert "br0wser-s3cret" not in page.content()

    page.goto("/admin/jobs/notificationchannel/")
    expect(page.locator(".field-signed img")).to_have_attribute("alt", "True")
    page.check(f"input[name=_selected_action][value='{channel.pk}']")
    page.select_option("select[name=action]", "send_test")
    page.click("button[name=index]")
    expect(page.locator("ul.messagelist")).to_contain_text(
        "Queued a test message to 1 channel(s)"
    )
    page.screenshot(path=str(screenshots / "notification-channels.png"))

    [request] = wait_for(lambda: receiver.requests, timeout=30)
    expected = hmac.new(b"br0wser-s3cret", request["body"], hashlib.sha256)
    assert request["headers"]["X-Karmchari-Signature"] == (
        f"sha256={expected.hexdigest()}"
    )
    assert json.loads(request["body"])["event"] == "test"

    page.goto("/admin/jobs/notificationdelivery/")
    expect(page.locator("#result_list tbody tr").first).to_contain_text("test")
    wait_for(
        lambda: channel.deliveries.filter(status="sent").exists(),  # type: ignore[attr-defined]
        timeout=15,
    )
