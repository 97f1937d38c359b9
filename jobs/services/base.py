"""What every service module shares: its errors and who asked."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A request that is well-formed but cannot be carried out now."""


class Conflict(ServiceError):
    """The object's state forbids the action (answered as 409)."""


class Gone(ServiceError):
    """The object was deleted by another request meanwhile (answered as 404)."""


def event_actor(user: Any) -> Any:
    return (
        user if user is not None and getattr(user, "is_authenticated", False) else None
    )


def actor_name(user: Any) -> str:
    actor = event_actor(user)
    return actor.get_username() if actor is not None else "the system"


class DependencyCycle(ServiceError):
    """Parents or children that would make a job wait for itself (answered as 400,
    under `field`)."""

    def __init__(self, message: str, *, field: str = "parents") -> None:
        super().__init__(message)
        self.field = field
