"""What the jobs.services tests share: the Celery send, mocked."""

from __future__ import annotations

from unittest import mock

import pytest


@pytest.fixture
def sent() -> mock.MagicMock:
    with mock.patch("jobs.tasks.run_execution.apply_async") as apply_async:
        yield apply_async
