"""What the operator console's tests share: a clean cache, agents and staff clients."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from agents.models import Agent

NumQueries = Callable[..., object]


@pytest.fixture
def fresh_cache() -> None:
    cache.clear()


def make_agent(name: str = "w1@host", **fields: object) -> Agent:
    fields.setdefault("instance_id", uuid.uuid4())
    fields.setdefault("last_heartbeat", timezone.now())
    fields.setdefault("cpu_cores", 8)
    fields.setdefault("memory_total", 16 << 30)
    fields.setdefault("memory_free", 4 << 30)
    fields.setdefault("system_cpu_load", 0.25)
    fields.setdefault("load_average", [1.5, 1.0, 0.5])
    return Agent.objects.create(name=name, **fields)


def staff(*perms: str) -> Client:
    user = User.objects.create_user("operator", password="pw", is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client
