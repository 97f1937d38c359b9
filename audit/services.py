from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError

from audit.models import AuditEntry

logger = logging.getLogger(__name__)


def audit_record(
    *,
    user: Any,
    method: str,
    path: str,
    status: int,
    address: str | None,
    user_agent: str = "",
) -> AuditEntry | None:
    """One entry. A failing insert is logged, never raised into the request."""
    authenticated = bool(user is not None and user.is_authenticated)
    try:
        return AuditEntry.objects.create(
            actor=user if authenticated else None,
            actor_name=user.get_username() if authenticated else "",
            method=method,
            path=path[:500],
            status=status,
            address=address,
            user_agent=user_agent[:300],
        )
    except DatabaseError:
        logger.exception("could not write the audit entry for %s %s", method, path)
        return None
