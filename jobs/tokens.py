"""API tokens, hashed at rest: make, check and revoke them.

A key is `kc_` + 43 random URL-safe characters (256 bits); the database keeps only its
SHA-256, so a leaked database leaks no usable key. Lookup is by that hash (unique
index), so checking a key costs one indexed query; `last_used_at` is written at most
once a minute per token so busy clients do not turn reads into writes.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from jobs.models import ApiToken

PREFIX = "kc_"
TOUCH_EVERY = timedelta(minutes=1)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def token_create(*, user: Any, name: str) -> tuple[ApiToken, str]:
    """A new token and its key (shown once; not recoverable afterwards)."""
    key = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, prefix=key[:10], key_hash=_digest(key)
    )
    return token, key


def token_revoke(*, token: ApiToken) -> ApiToken:
    """Revoke a token (again is a no-op). One deleted meanwhile is left deleted: a
    conditional UPDATE, never a save that could fail or bring its row back."""
    if token.revoked_at is None:
        now = timezone.now()
        ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=now
        )
        token.revoked_at = now
    return token


def token_authenticate(*, key: str) -> ApiToken | None:
    """The active token with this key (and its active user), or None."""
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=_digest(key), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or token.last_used_at < now - TOUCH_EVERY:
        ApiToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - TOUCH_EVERY)
        ).update(last_used_at=now)
    return token
