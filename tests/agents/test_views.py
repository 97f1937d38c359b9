from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from unittest import mock

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError
from rest_framework.test import APIClient

from agents import services
from agents.models import Agent
from tests.agents.conftest import make_sample
from tests.tokens import make_token

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.agents.urls")]


@pytest.fixture
def control() -> Iterator[mock.MagicMock]:
    with mock.patch("karmchari_site.celery.app.control") as control:
        yield control


def client_with(*perms: str) -> APIClient:
    user = User.objects.create_user(f"user{User.objects.count()}")
    for perm in perms:
        user.user_permissions.add(Permission.objects.get(codename=perm))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_token(user)}")
    return client


def test_it_lists_agents_with_live_stats_in_constant_queries(
    api: APIClient,
    make_agent: Callable[..., Agent],
    django_assert_num_queries: Callable[..., object],
) -> None:
    live_agent = make_agent(memory_free=1)
    for _ in range(4):
        make_agent(memory_free=123, running=[9])
    sample = make_sample(running=[3, 4])
    services.agent_heartbeat(agent=live_agent, sample=sample, persist=False)
    api.get("/api/agents/")  # Warm the token and permission caches.

    with django_assert_num_queries(3):  # token and user, count, page
        response = api.get("/api/agents/")
    assert response.status_code == 200
    rows = {row["name"]: row for row in response.json()["results"]}
    assert len(rows) == 5
    row = rows[live_agent.name]
    assert row["alive"] is True
    assert row["stats"]["origin"] == "live"
    assert row["stats"]["memory_free"] == sample.memory_free
    assert row["executions"] == [3, 4]
    other = next(r for name, r in rows.items() if name != live_agent.name)
    assert other["stats"]["origin"] == "database"
    assert other["stats"]["memory_free"] == 123
    assert other["executions"] == [9]


def test_it_shows_a_silent_agent_as_not_alive(
    api: APIClient, make_agent: Callable[..., Agent]
) -> None:
    agent = make_agent(last_heartbeat=timezone.now() - timedelta(hours=1))
    body = api.get(f"/api/agents/{agent.pk}/").json()
    assert body["status"] == "online"
    assert body["alive"] is False
    assert body["instance_id"] == str(agent.instance_id)


def test_it_drains_and_resumes_over_the_api(
    api: APIClient, make_agent: Callable[..., Agent], control: mock.MagicMock
) -> None:
    agent = make_agent(name="w@h")
    control.cancel_consumer.return_value = [{"w@h": {"ok": "no longer consuming"}}]
    control.add_consumer.return_value = [{"w@h": {"ok": "consuming"}}]
    response = api.post(f"/api/agents/{agent.pk}/drain/")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "draining"
    response = api.post(f"/api/agents/{agent.pk}/resume/")
    assert response.json()["status"] == "online"


def test_it_answers_409_for_offline_and_503_for_unreachable_agents(
    api: APIClient, make_agent: Callable[..., Agent], control: mock.MagicMock
) -> None:
    offline = make_agent(status=Agent.Status.OFFLINE)
    response = api.post(f"/api/agents/{offline.pk}/drain/")
    assert response.status_code == 409
    assert "offline" in response.json()["detail"]
    control.cancel_consumer.return_value = []
    response = api.post(f"/api/agents/{make_agent().pk}/drain/")
    assert response.status_code == 503
    assert "did not answer" in response.json()["detail"]


def test_it_answers_503_when_the_broker_is_unreachable(
    api: APIClient, make_agent: Callable[..., Agent], control: mock.MagicMock
) -> None:
    refused = KombuOperationalError("Error 111 connecting to 127.0.0.1:6379.")
    control.cancel_consumer.side_effect = refused
    control.add_consumer.side_effect = refused
    agent = make_agent()
    for verb in ("drain", "resume"):
        response = api.post(f"/api/agents/{agent.pk}/{verb}/")
        assert response.status_code == 503
        assert "broker is unreachable" in response.json()["detail"]
    assert Agent.objects.get(pk=agent.pk).status == Agent.Status.ONLINE


def test_it_needs_change_permission_to_drain(
    make_agent: Callable[..., Agent], control: mock.MagicMock
) -> None:
    agent = make_agent()
    viewer = client_with("view_agent")
    assert viewer.get("/api/agents/").status_code == 200
    assert viewer.post(f"/api/agents/{agent.pk}/drain/").status_code == 403
    control.cancel_consumer.assert_not_called()
    assert client_with().get("/api/agents/").status_code == 403
    assert APIClient().get("/api/agents/").status_code == 401


def test_it_returns_the_last_hour_of_stats(
    api: APIClient, make_agent: Callable[..., Agent]
) -> None:
    agent = make_agent()
    for running in ([], [1], [1, 2]):
        sample = make_sample(running=running)
        services.agent_heartbeat(agent=agent, sample=sample, persist=False)
    points = api.get(f"/api/agents/{agent.pk}/history/").json()
    assert [point["running"] for point in points] == [0, 1, 2]
    assert points[0]["system_cpu_load"] == 0.5
