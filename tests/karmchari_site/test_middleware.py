from __future__ import annotations

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from jobs.models import Execution

pytestmark = pytest.mark.django_db


def test_it_serves_an_api_path_without_its_trailing_slash(
    api: APIClient, make_execution: Callable[..., Execution]
) -> None:
    running = make_execution(status=Execution.Status.RUNNING, worker="w")
    response = api.post(f"/api/executions/{running.pk}/kill")
    assert response.status_code == 202
    running.refresh_from_db()
    assert running.desired_state == Execution.DesiredState.KILL
    assert api.get("/api/stats").status_code == 200


def test_it_leaves_other_paths_and_unknown_ones_alone(api: APIClient) -> None:
    assert api.get("/api/v1/stats").status_code == 200  # Kala: its slash is optional
    assert api.get("/api/nothing-here").status_code == 404
    assert api.get("/admin").status_code == 301  # CommonMiddleware, as before
