from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone
from django_redis import get_redis_connection

from agents import live
from agents.models import Agent
from agents.stats import HostFacts, Sample


@pytest.fixture
def facts() -> HostFacts:
    return HostFacts(
        host="box1",
        os_name="Linux",
        os_version="6.1.0",
        cpu_arch="x86_64",
        cpu_cores=8,
        memory_total=16 * 2**30,
        swap_total=2 * 2**30,
        pid=4242,
        version="0.1.0",
    )


def age_live_stamp(instance_id: uuid.UUID | str, seconds: float) -> None:
    """Make Redis hold the agent's live value as if received `seconds` ago."""
    left = round((live.live_ttl() - seconds) * 1000)
    get_redis_connection("default").pexpire(live.live_key(instance_id), left)


def make_sample(**fields: Any) -> Sample:
    values: dict[str, Any] = {
        "at": time.time(),
        "memory_total": 16 * 2**30,
        "memory_free": 6 * 2**30,
        "swap_total": 2 * 2**30,
        "swap_free": 2**30,
        "process_cpu_load": 0.25,
        "cpu_time": 12.5,
        "system_cpu_load": 0.5,
        "load_average": [1.5, 1.0, 0.5],
        "running": [],
    }
    values.update(fields)
    return Sample(**values)


@pytest.fixture
def make_agent(db: None) -> Callable[..., Agent]:
    counter = iter(range(1, 1_000_000))

    def make(**fields: Any) -> Agent:
        fields.setdefault("name", f"q{next(counter)}@box1")
        fields.setdefault("instance_id", uuid.uuid4())
        fields.setdefault("host", "box1")
        fields.setdefault("queues", ["celery"])
        fields.setdefault("memory_total", 16 * 2**30)
        fields.setdefault("last_heartbeat", timezone.now())
        fields.setdefault("started_at", timezone.now())
        return Agent.objects.create(**fields)

    return make
