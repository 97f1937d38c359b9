from __future__ import annotations

from unittest import mock

import pytest
from django.test import override_settings

from jobs.runners import RunContext, SpecError
from jobs.runners.task import TaskRunner

runner = TaskRunner()
context = RunContext(execution_id=1, job_name="t", app_name="a", timeout=None)


@override_settings(KARMCHARI_ALLOWED_TASKS=["reports.build"])
def test_it_accepts_only_allowed_task_names() -> None:
    assert runner.validate({"task": "reports.build", "args": [1]}) == {
        "task": "reports.build",
        "args": [1],
    }
    with pytest.raises(SpecError) as info:
        runner.validate({"task": "os.system"})
    assert "KARMCHARI_ALLOWED_TASKS" in info.value.errors["task"]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({}, "task"),
        ({"task": "x", "args": {}}, "args"),
        ({"task": "x", "kw": 1}, "spec"),
    ],
)
def test_it_refuses_bad_specs(spec: dict, field: str) -> None:
    with pytest.raises(SpecError) as info:
        runner.validate(spec)
    assert field in info.value.errors


@override_settings(KARMCHARI_ALLOWED_TASKS=["reports.build"])
def test_it_sends_with_results_on_and_follows_to_success() -> None:
    result = mock.Mock(id="abc", state="SUCCESS", result={"rows": 3})
    with mock.patch("jobs.runners.task.current_app") as app:
        app.send_task.return_value = result
        outcome = runner.run({"task": "reports.build", "kwargs": {"n": 1}}, context)
    app.send_task.assert_called_once_with(
        "reports.build", args=[], kwargs={"n": 1}, queue=None, ignore_result=False
    )
    assert (outcome.status, outcome.output) == ("succeeded", '{"rows": 3}')


@override_settings(KARMCHARI_ALLOWED_TASKS=["reports.build"])
def test_it_revokes_on_kill() -> None:
    killing = RunContext(
        execution_id=1, job_name="t", app_name="a", timeout=None, poll=lambda: "kill"
    )
    with mock.patch("jobs.runners.task.current_app") as app:
        app.send_task.return_value = mock.Mock(id="abc", state="STARTED")
        outcome = runner.run({"task": "reports.build"}, killing)
    assert outcome.status == "killed"
    app.control.revoke.assert_called_once_with("abc", terminate=True, signal="SIGTERM")


def test_it_refuses_at_run_time_a_task_no_longer_allowed() -> None:
    assert runner.run({"task": "reports.build"}, context).status == "failed"
