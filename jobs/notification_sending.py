"""Sending notifications: one delivery row's attempt (jobs.deliver_notification
calls notification_deliver), by email, Slack-compatible webhook or signed webhook;
the message texts; the signatures and, for receivers written in Python, their check
(webhook_verify). What to send, and when, is decided in jobs.notifications."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import requests
from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone

from jobs.models import NotificationChannel, NotificationDelivery, NotificationRule
from jobs.secrets import SecretError, channel_signing_key

logger = logging.getLogger(__name__)

Event = NotificationRule.Event
SIGNATURE_HEADER = "X-Karmchari-Signature"
# Signs the timestamp with the body, so a receiver can refuse a replayed request
# (Stripe's scheme); the body-only header above stays for existing receivers.
TIMED_SIGNATURE_HEADER = "X-Karmchari-Signature-V1"
WEBHOOK_TOLERANCE_SECONDS = 300
# The error of a delivery not sent because its channel was disabled: an operator's
# stop, not a failure (left out of karmchari_notifications_failed).
CHANNEL_DISABLED = "Not sent: the channel was disabled."


class DeliveryFailed(Exception):
    """One attempt failed; the task retries until it runs out of attempts."""


class CannotSign(DeliveryFailed):
    """The channel's secret cannot be decrypted: no attempt can succeed until an
    operator sets it again (or restores its key), so the delivery fails at once."""


def webhook_signature(*, secret: str, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 of the exact request body with the channel secret."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def webhook_timed_signature(*, secret: str, body: bytes, timestamp: int) -> str:
    """`t=<unix time>,v1=<hex>`: HMAC-SHA256 of `<t>.` followed by the exact body."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def webhook_verify(
    *,
    secret: str,
    body: bytes,
    header: str,
    tolerance: int = WEBHOOK_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """For a receiver written in Python: whether `header` (the request's
    X-Karmchari-Signature-V1) signs `body` with `secret` and was made within
    `tolerance` seconds of `now`, so a captured request cannot be replayed later."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = webhook_timed_signature(secret=secret, body=body, timestamp=timestamp)
    return hmac.compare_digest(expected, header.strip())


def _slack_escape(text: str) -> str:
    """Slack's own escaping: its <...> are links and mentions (<!channel>)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _text(payload: dict[str, Any], escape: Callable[[str], str] = str) -> str:
    execution = payload.get("execution") or {}
    if payload["event"] == NotificationDelivery.TEST_EVENT:
        # Of no job: says which channel, so that one test of several is told apart.
        channel = escape(str(payload.get("channel", "")))
        return f"[Karmchari] test message to channel {channel}\n" + escape(
            str(execution.get("reason", ""))
        )
    attempts = execution.get("attempt") or 1
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    what = {
        Event.FAILURE: f"failed{tries} ({execution.get('status')}, exit code "
        f"{execution.get('exit_code')})",
        Event.SUCCESS: "succeeded",
        Event.START: "started",
        Event.RECOVERY: "recovered: succeeded after failing",
        Event.LATE: "is late: it did not start within its window",
        Event.SLOW: f"is slow: took {execution.get('duration') or 0:.1f}s, much "
        "longer than its average",
    }.get(payload["event"], payload["event"])
    what = _flood_text(payload, what)
    line = f"[Karmchari] {escape(payload['app'])}/{escape(payload['job'])} {what}"
    if execution.get("reason"):
        line += f"\n{escape(execution['reason'])}"
    if execution.get("url"):
        line += f"\n{execution['url']}"
    return line


def _flood_text(payload: dict[str, Any], what: str) -> str:
    """What flood control adds to a failure, late or recovery message: the failures
    held back since the last message, and flapping. Times in UTC, said so."""
    held = payload.get("held_back") or 0
    since = _utc(payload.get("held_since"))
    more = f"{held} more failure{'s' if held != 1 else ''} since {since}"
    flapping = payload.get("flapping")
    if flapping:
        changes = f"flapping: {flapping['changes']} changes since "
        changes += _utc(flapping["since"])
        if payload["event"] == Event.RECOVERY:
            return f"{what}; {changes}" + (f"; {more} held back" if held else "")
        return f"is {changes}" + (f"; {more} held back" if held else "") + f"; {what}"
    if payload.get("reminder"):
        # A timer reminder of a job that has not run again holds back nothing.
        return (
            f"still failing: {more if held else f'nothing new since {since}'}; {what}"
        )
    if held and payload["event"] == Event.RECOVERY:
        return f"{what}; {more} held back"
    return what


def _utc(iso: str | None) -> str:
    if not iso:
        return "(never)"
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    try:
        # Not followed: on a redirect requests turns the POST into a GET without
        # the body, and the receiver never gets the event.
        response = requests.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", **headers},
            timeout=settings.KARMCHARI_WEBHOOK_TIMEOUT,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
    if 300 <= response.status_code < 400:
        location = response.headers.get("Location", "")
        raise DeliveryFailed(
            f"HTTP {response.status_code}: redirected to {location or '(nowhere)'}; "
            "notifications are not sent on: set the channel's target to that URL."
        )
    if response.status_code >= 300:
        raise DeliveryFailed(f"HTTP {response.status_code}: {response.text[:200]}")
    return response.status_code


def _send(delivery: NotificationDelivery) -> int | None:
    channel = delivery.channel
    payload = delivery.payload
    if channel.kind == NotificationChannel.Kind.EMAIL:
        text = _text(payload)
        recipients = [a.strip() for a in channel.target.split(",") if a.strip()]
        try:
            send_mail(
                text.splitlines()[0],
                text + "\n\n" + json.dumps(payload, indent=2),
                settings.DEFAULT_FROM_EMAIL,
                recipients,
            )
        except Exception as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        return None
    if channel.kind == NotificationChannel.Kind.SLACK:
        body = json.dumps({"text": _text(payload, _slack_escape)}).encode()
        return _post(channel.target, body, {})
    body = json.dumps(payload, sort_keys=True).encode()
    timestamp = int(time.time())
    headers = {
        "X-Karmchari-Event": delivery.event,
        "X-Karmchari-Delivery": str(delivery.pk),
        "X-Karmchari-Timestamp": str(timestamp),
    }
    try:
        # Stored encrypted (jobs/secrets.py): decrypted here, for this request only.
        key = channel_signing_key(channel=channel)
    except SecretError as exc:
        raise CannotSign(f"Not sent: {exc.errors['secret']}") from None
    if key:
        headers[SIGNATURE_HEADER] = webhook_signature(secret=key, body=body)
        headers[TIMED_SIGNATURE_HEADER] = webhook_timed_signature(
            secret=key, body=body, timestamp=timestamp
        )
    return _post(channel.target, body, headers)


def notification_deliver(*, delivery_id: int, final: bool) -> NotificationDelivery:
    """One attempt. DeliveryFailed when it failed and more attempts remain (`final`
    False); the last failure is recorded as `failed`."""
    delivery = NotificationDelivery.objects.select_related("channel").get(
        pk=delivery_id
    )
    if delivery.status == NotificationDelivery.Status.SENT:
        return delivery  # delivered twice by the broker: send once
    if not delivery.channel.enabled:
        # Disabling a channel is how an operator stops it: queued deliveries and
        # their retries too. Recorded, and not retried.
        delivery.status = NotificationDelivery.Status.FAILED
        delivery.error = CHANNEL_DISABLED
        delivery.save(update_fields=["status", "error"])
        return delivery
    delivery.attempts += 1
    try:
        delivery.response_code = _send(delivery)
    except DeliveryFailed as exc:
        delivery.error = str(exc)
        last = final or isinstance(exc, CannotSign)
        if last:
            delivery.status = NotificationDelivery.Status.FAILED
        delivery.save(update_fields=["attempts", "error", "status"])
        logger.warning(
            "notification %s to %s failed (attempt %s): %s",
            delivery.pk,
            delivery.channel,
            delivery.attempts,
            exc,
        )
        if not last:
            raise
        return delivery
    delivery.status = NotificationDelivery.Status.SENT
    delivery.sent_at = timezone.now()
    delivery.error = ""
    delivery.save(
        update_fields=["attempts", "response_code", "status", "sent_at", "error"]
    )
    return delivery


def retry_countdown(*, attempt: int) -> float:
    """Seconds before attempt `attempt + 1`: doubling from the setting."""
    base = float(settings.KARMCHARI_NOTIFY_RETRY_SECONDS)
    return base * 2.0 ** (attempt - 1)
