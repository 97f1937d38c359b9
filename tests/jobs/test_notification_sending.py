"""Sending notifications (jobs/notification_sending.py): webhooks and their
signatures, Slack text, email, retries and the channel's stop, delivered to a real
local HTTP receiver and Django's mail outbox."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from django.core import mail
from django.test.utils import override_settings

from jobs import notification_sending, notifications
from jobs.models import App, Job, NotificationChannel, NotificationDelivery
from jobs.services import notification_config
from tests.jobs.conftest import (
    channel_rule,
    finished_run,
    queued_then_channel_disabled,
    rule,
    run,
)
from tests.receiver import Receiver

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager")]


@pytest.fixture
def job(make_app: Callable[..., App], make_job: Callable[..., Job]) -> Job:
    return make_job(app=make_app("ops"), name="backup")


def test_it_posts_a_signed_webhook_on_failure(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    rule(job=job, kind="webhook", target=receiver.url, secret="s3", events=["failure"])

    run(job, "succeeded", capture=django_capture_on_commit_callbacks)
    assert receiver.requests == []
    execution = run(job, "failed", capture=django_capture_on_commit_callbacks)

    [request] = receiver.requests
    body = request["body"]
    expected = hmac.new(b"s3", body, hashlib.sha256).hexdigest()
    assert request["headers"]["X-Karmchari-Signature"] == f"sha256={expected}"
    assert request["headers"]["X-Karmchari-Event"] == "failure"
    timed = request["headers"]["X-Karmchari-Signature-V1"]
    assert timed.startswith(f"t={request['headers']['X-Karmchari-Timestamp']},v1=")
    assert notification_sending.webhook_verify(secret="s3", body=body, header=timed)
    payload = json.loads(body)
    assert payload["event"] == "failure"
    assert (payload["app"], payload["job"]) == ("ops", "backup")
    assert payload["execution"]["id"] == execution.pk
    assert payload["execution"]["exit_code"] == 2
    delivery = NotificationDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_code) == (
        "sent",
        1,
        200,
    )


def test_it_retries_a_failing_webhook_and_keeps_a_delivery_log(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    rule(job=job, kind="webhook", target=receiver.url, events=["failure"])
    receiver.answers = [500, 502]

    run(job, "failed", capture=django_capture_on_commit_callbacks)

    assert len(receiver.requests) == 3
    delivery = NotificationDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.error) == ("sent", 3, "")
    assert [notification_sending.retry_countdown(attempt=n) for n in (1, 2, 3)] == [
        10.0,
        20.0,
        40.0,
    ]


@override_settings(KARMCHARI_NOTIFY_MAX_ATTEMPTS=2)
def test_it_gives_up_after_the_last_attempt_and_counts_it(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    rule(job=job, kind="webhook", target=receiver.url, events=["failure"])
    receiver.answers = [500, 500, 500]

    run(job, "failed", capture=django_capture_on_commit_callbacks)

    assert len(receiver.requests) == 2
    delivery = NotificationDelivery.objects.get()
    assert delivery.status == "failed"
    assert delivery.error.startswith("HTTP 500")
    [family] = list(notifications.notification_metrics())
    assert {s.labels["kind"]: s.value for s in family.samples}["webhook"] == 1


def test_it_emails_through_djangos_mail_settings(
    job: Job,
    mailoutbox: list[mail.EmailMessage],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    rule(
        job=job,
        kind="email",
        target="ops@example.com, me@example.com",
        events=["failure"],
    )

    run(job, "failed", capture=django_capture_on_commit_callbacks)

    [message] = mailoutbox
    assert message.to == ["ops@example.com", "me@example.com"]
    assert message.subject.startswith("[Karmchari] ops/backup failed")


def test_it_posts_slack_text(
    job: Job, receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    rule(job=job, kind="slack", target=receiver.url, events=["success"])

    run(job, "succeeded", capture=django_capture_on_commit_callbacks)

    [request] = receiver.requests
    text = json.loads(request["body"])["text"]
    assert text.startswith("[Karmchari] ops/backup succeeded")


def test_it_verifies_a_timed_webhook_signature_only_fresh_and_untouched() -> None:
    body = b'{"event": "failure"}'
    header = notification_sending.webhook_timed_signature(
        secret="s3", body=body, timestamp=1_000_000
    )

    def verify(**changes: Any) -> bool:
        arguments = {"secret": "s3", "body": body, "header": header}
        return notification_sending.webhook_verify(
            **{**arguments, **changes}, now=1_000_100
        )

    assert verify()
    assert not verify(secret="other")
    assert not verify(body=body + b" ")
    # A request captured and replayed later than the tolerance is refused.
    assert not notification_sending.webhook_verify(
        secret="s3", body=body, header=header, now=1_000_000 + 301
    )
    assert not verify(header=header.replace("t=1000000", "t=1000050"))
    assert not verify(header="t=abc,v1=00")
    assert not verify(header="garbage")


def test_it_sends_nothing_through_a_channel_disabled_before_the_attempt(
    job: Job, mailoutbox: list[mail.EmailMessage]
) -> None:
    """A delivery waiting for its (next) attempt; the operator disables the channel
    (it spams, or points somewhere wrong). The attempt still goes out."""
    delivery = queued_then_channel_disabled(job)

    notification_sending.notification_deliver(delivery_id=delivery.pk, final=False)

    assert mailoutbox == []


def test_it_escapes_slack_control_characters(
    job: Job, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """Slack reads `<...>` as links and mentions and `&` as an entity: a run whose
    reason says `<!channel>` pings the whole channel. Slack asks senders to escape
    &, < and > in text."""
    channel_rule(
        "slack",
        job=job,
        events=["failure"],
        kind="slack",
        target="https://hooks.slack.example/x",
    )
    with mock.patch("jobs.notification_sending._post", return_value=200) as post:
        finished_run(
            job,
            "failed",
            django_capture_on_commit_callbacks,
            reason="if a < b && c > d then <!channel>",
        )

    text = json.loads(post.call_args.args[1])["text"]
    assert "<!channel>" not in text
    assert "if a &lt; b &amp;&amp; c &gt; d then &lt;!channel&gt;" in text


def test_it_does_not_follow_a_redirect(
    job: Job,
    receiver: Receiver,
    settings: Any,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    """requests would follow a 301 with a GET without the body: the receiver never
    hears of the event, yet the log said `sent`."""
    settings.KARMCHARI_NOTIFY_MAX_ATTEMPTS = 1
    rule(job=job, kind="webhook", target=receiver.url, events=["failure"])
    moved = receiver.url.replace("/hook", "/moved")
    receiver.answers = [(301, {"Location": moved})]

    run(job, "failed", capture=django_capture_on_commit_callbacks)

    assert [r["method"] for r in receiver.requests] == ["POST"]
    delivery = NotificationDelivery.objects.get()
    assert delivery.status == "failed"
    assert delivery.error == (
        f"HTTP 301: redirected to {moved}; notifications are not sent on: set the "
        "channel's target to that URL."
    )


def test_it_names_the_channel_in_a_test_message(
    receiver: Receiver, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """A test message is of no job: its email subject and Slack text say which
    channel it tests, and who sent it."""
    email = NotificationChannel.objects.create(
        name="ops-mail", kind="email", target="ops@example.com"
    )
    slack = NotificationChannel.objects.create(
        name="ops-<slack>", kind="slack", target=receiver.url
    )
    with django_capture_on_commit_callbacks(execute=True):
        for channel in (email, slack):
            notification_config.notification_channel_test(channel=channel)

    [message] = mail.outbox
    assert message.subject == "[Karmchari] test message to channel ops-mail"
    assert "this channel works." in message.body
    [request] = receiver.requests
    assert json.loads(request["body"])["text"] == (
        "[Karmchari] test message to channel ops-&lt;slack&gt;\n"
        "A test message from Karmchari, sent by the system: this channel works."
    )
