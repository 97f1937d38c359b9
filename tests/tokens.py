"""API tokens for tests (hashed at rest: the key exists only here, once)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobs.tokens import token_create


@dataclass(frozen=True)
class Key:
    key: str

    def __str__(self) -> str:
        return self.key


def make_token(user: Any, name: str = "test") -> Key:
    return Key(token_create(user=user, name=name)[1])
