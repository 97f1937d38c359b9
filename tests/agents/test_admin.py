from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from unittest import mock

import pytest
from django.test import Client
from django.utils import timezone

from agents import services
from agents.admin import history_svg
from agents.models import Agent
from agents.stats import Point
from jobs.models import Execution
from tests.agents.conftest import make_sample

pytestmark = pytest.mark.django_db


@pytest.fixture
def control() -> Iterator[mock.MagicMock]:
    with mock.patch("karmchari_site.celery.app.control") as control:
        yield control


def test_it_lists_agents_with_badges_load_and_memory(
    admin_client: Client,
    make_agent: Callable[..., Agent],
    django_assert_num_queries: Callable[..., object],
) -> None:
    alive = make_agent(name="alive@h")
    services.agent_heartbeat(
        agent=alive, sample=make_sample(running=[1, 2, 3]), persist=False
    )
    make_agent(name="stale@h", last_heartbeat=timezone.now() - timedelta(hours=1))
    make_agent(name="gone@h", status=Agent.Status.OFFLINE)
    for i in range(5):
        make_agent(name=f"more{i}@h")
    admin_client.get("/admin/agents/agent/")

    with django_assert_num_queries(5):  # session, user, 2 counts, page
        response = admin_client.get("/admin/agents/agent/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "alive@h" in html and ">alive</span>" in html
    assert ">stale</span>" in html and ">offline</span>" in html
    assert "50% CPU, load 1.50" in html
    assert "6.0\xa0GB of 16.0\xa0GB (38%)" in html
    assert '<td class="field-running_count">3</td>' in html


def test_it_shows_a_chart_and_running_executions_on_the_detail_page(
    admin_client: Client, make_agent: Callable[..., Agent]
) -> None:
    agent = make_agent()
    for n in range(3):
        sample = make_sample(at=1000.0 + n * 5, running=[7])
        services.agent_heartbeat(agent=agent, sample=sample, persist=False)
    response = admin_client.get(f"/admin/agents/agent/{agent.pk}/change/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "<svg" in html and "<polyline" in html
    assert "/admin/jobs/execution/7/change/" in html
    assert f"/admin/agents/agent/{agent.pk}/drain/" in html
    assert 'name="_save"' not in html


def test_it_draws_history_between_zero_and_full_scale() -> None:
    points = [
        Point(
            at=0,
            memory_free=100,
            swap_free=0,
            process_cpu_load=0,
            system_cpu_load=0,
            load1=0,
            running=0,
        ),
        Point(
            at=60,
            memory_free=0,
            swap_free=0,
            process_cpu_load=1,
            system_cpu_load=1,
            load1=0,
            running=0,
        ),
    ]
    svg = history_svg(points, memory_total=100, width=600)
    assert 'points="0.0,120.0 600.0,0.0"' in svg
    assert "last 1 min" in svg
    assert "Not enough samples" in history_svg(points[:1], memory_total=100)


def test_it_drains_from_the_detail_page(
    admin_client: Client, make_agent: Callable[..., Agent], control: mock.MagicMock
) -> None:
    agent = make_agent(name="w@h")
    control.cancel_consumer.return_value = [{"w@h": {"ok": "no longer consuming"}}]
    assert admin_client.get(f"/admin/agents/agent/{agent.pk}/drain/").status_code == 405
    response = admin_client.post(f"/admin/agents/agent/{agent.pk}/drain/", follow=True)
    assert Agent.objects.get(pk=agent.pk).status == Agent.Status.DRAINING
    assert "Draining 1 agent(s)." in response.content.decode()


def test_it_drains_selected_agents_with_an_action(
    admin_client: Client, make_agent: Callable[..., Agent], control: mock.MagicMock
) -> None:
    agent = make_agent(name="w@h")
    offline = make_agent(status=Agent.Status.OFFLINE)
    control.cancel_consumer.return_value = [{"w@h": {"ok": "no longer consuming"}}]
    response = admin_client.post(
        "/admin/agents/agent/",
        {"action": "drain", "_selected_action": [agent.pk, offline.pk]},
        follow=True,
    )
    html = response.content.decode()
    assert "Draining 1 agent(s)." in html
    assert "is offline; there is nothing to drain" in html


def test_it_shows_cores_and_class_based_badges_that_follow_the_theme(
    admin_client: Client, make_agent: Callable[..., Agent]
) -> None:
    make_agent(name="w@h", cpu_cores=12)
    html = admin_client.get("/admin/agents/agent/").content.decode()
    assert '<td class="field-cpu_cores">12</td>' in html
    assert '<span class="k-badge k-badge-alive">alive</span>' in html
    assert "background:#" not in html


def test_a_viewer_sees_no_drain_button_and_the_endpoint_refuses(
    make_agent: Callable[..., Agent], control: mock.MagicMock
) -> None:
    from django.contrib.auth.models import Permission, User

    agent = make_agent(name="w@h")
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_agent"))
    client = Client()
    client.force_login(user)
    page = client.get(f"/admin/agents/agent/{agent.pk}/change/")
    assert page.status_code == 200
    assert "/drain/" not in page.content.decode()
    assert client.post(f"/admin/agents/agent/{agent.pk}/drain/").status_code == 403
    assert Agent.objects.get(pk=agent.pk).status == Agent.Status.ONLINE
    control.cancel_consumer.assert_not_called()


def test_it_deletes_only_offline_agents(
    admin_client: Client,
    make_agent: Callable[..., Agent],
    make_execution: Callable[..., Execution],
) -> None:
    """Recovery goes by an agent going offline: deleting the row of one that is
    not would leave its runs `running` for ever if its worker is dead."""
    alive = make_agent()
    run = make_execution(status="running", worker=alive.name, agent=alive)
    gone = make_agent(status=Agent.Status.OFFLINE)

    response = admin_client.post(
        f"/admin/agents/agent/{alive.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 403
    response = admin_client.post(
        "/admin/agents/agent/",
        {
            "action": "delete_selected",
            "_selected_action": [alive.pk, gone.pk],
            "post": "yes",
        },
    )
    assert Agent.objects.filter(pk=alive.pk).exists()
    assert Execution.objects.get(pk=run.pk).agent_id == alive.pk

    html = admin_client.get(f"/admin/agents/agent/{gone.pk}/change/").content
    assert f"/admin/agents/agent/{gone.pk}/delete/".encode() in html
    response = admin_client.post(
        f"/admin/agents/agent/{gone.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 302
    assert not Agent.objects.filter(pk=gone.pk).exists()
