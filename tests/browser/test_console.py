"""An operator runs the system from the admin in a real browser: log in, create an
app, a job and its schedule, run it, watch its output arrive, pause, resume and kill
it, then look at the dashboard and the agents."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import PASSWORD, SKIP_REASON
from tests.integration.conftest import Processes

if TYPE_CHECKING:
    from playwright.sync_api import Page

expect = pytest.importorskip("playwright.sync_api", reason=SKIP_REASON).expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TICKER = "for i in $(seq 1 600); do echo tick $i; sleep 0.1; done"


def badge(page: Page) -> object:
    return expect(page.locator(".field-status_badge .k-badge"))


def test_it_runs_a_job_from_the_admin_and_controls_it_live(
    page: Page, processes: Processes, queue: str, screenshots: Path
) -> None:
    processes.worker(queue, KARMCHARI_HEARTBEAT_SECONDS="0.5")

    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#k-figures")).to_be_visible()

    page.goto("/admin/jobs/app/add/")
    page.fill("#id_name", "ops")
    page.click("input[name=_save]")
    expect(page.locator("ul.messagelist")).to_contain_text("was added successfully")

    page.goto("/admin/jobs/job/add/")
    page.select_option("#id_app", label="ops")
    page.fill("#id_name", "ticker")
    page.select_option("#id_kind", "shell")
    page.fill("#id_spec", json.dumps({"command": TICKER}))
    page.fill("#id_queue", queue)
    page.click("#schedules-group .add-row a")
    page.fill("#id_schedules-0-expression", "0 6 * * 1-5")
    page.click("input[name=_continue]")
    expect(page.locator("ul.messagelist")).to_contain_text("was added successfully")
    expect(page.locator("#schedules-group")).to_contain_text("at 06:00 on MON-FRI")
    expect(page.locator("#schedules-group .k-fire")).to_have_count(5)

    page.click("#k-run")
    expect(page.locator("ul.messagelist")).to_contain_text("Started ticker as #")
    assert re.search(r"/admin/jobs/execution/\d+/change/$", page.url)
    expect(page.locator("#karmchari-log")).to_contain_text("tick 3", timeout=30_000)
    badge(page).to_have_text("running")  # type: ignore[attr-defined]

    page.reload()
    expect(page.locator(".field-agent_link a")).to_contain_text(f"{queue}@")
    page.click("#k-pause")
    expect(page.locator("ul.messagelist")).to_contain_text("to pause.")
    badge(page).to_have_text("paused")  # type: ignore[attr-defined]
    expect(page.locator("#k-resume")).to_be_visible()
    expect(page.locator("#k-pause")).to_be_hidden()

    page.click("#k-resume")
    expect(page.locator("ul.messagelist")).to_contain_text("to resume.")
    badge(page).to_have_text("running")  # type: ignore[attr-defined]
    shown = page.locator("#karmchari-log").inner_text().count("tick")
    expect(page.locator("#karmchari-log")).to_contain_text(f"tick {shown + 3}")
    page.screenshot(path=str(screenshots / "execution.png"), full_page=True)

    page.click("#k-kill")
    expect(page.locator("ul.messagelist")).to_contain_text("to kill.")
    badge(page).to_have_text("killed")  # type: ignore[attr-defined]
    expect(page.locator("#k-kill")).to_be_hidden()
    expect(page.locator("#k-retry")).to_be_visible()
    expect(page.locator("#k-output h2")).not_to_contain_text("(live)")

    page.goto("/admin/jobs/job/")
    row = page.locator("#result_list tbody tr", has_text="ticker")
    expect(row.locator(".k-badge")).to_have_text("killed")
    expect(row).to_contain_text("at 06:00 on MON-FRI")
    row.locator("th a").click()
    expect(page.locator("#executions-group")).to_contain_text("killed")
    page.screenshot(path=str(screenshots / "job.png"), full_page=True)

    page.goto("/admin/")
    expect(page.locator("svg.k-hourly rect[data-outcome=killed]")).to_have_count(1)
    expect(page.locator("#k-upcoming")).to_contain_text("ops / ticker")
    agent_row = page.locator("#k-agents tbody tr", has_text=f"{queue}@")
    expect(agent_row.locator(".k-badge")).to_have_text("alive")
    page.screenshot(path=str(screenshots / "dashboard.png"), full_page=True)

    page.goto("/admin/agents/agent/")
    agent_row = page.locator("#result_list tbody tr", has_text=f"{queue}@")
    expect(agent_row.locator(".k-badge")).to_have_text("alive")
    page.screenshot(path=str(screenshots / "agents.png"), full_page=True)
    agent_row.locator("th a").click()
    expect(page.locator("svg.k-chart polyline").first).to_be_attached()
    expect(page.locator("#k-drain")).to_be_visible()
    page.screenshot(path=str(screenshots / "agent.png"), full_page=True)


def test_it_says_where_the_live_log_left_output_out(page: Page) -> None:
    """The server keeps a capped tail: when it answers from later than asked, the
    page says how much it did not get, instead of gluing the two sides together."""
    from jobs import services
    from jobs.models import App, Execution

    job = services.job_create(
        app=App.objects.create(name="ops"), name="big", spec={"command": "true"}
    )
    run = Execution.objects.create(job=job, status="running")
    answers = iter(
        [
            {"offset": 0, "next_offset": 9, "text": "line 001\n", "finished": False},
            {"offset": 5009, "next_offset": 5027, "text": "ine 501\nline 502\n",
             "finished": True, "status": "succeeded"},
        ]
    )  # fmt: skip

    def answer(route: object) -> None:
        body = {"status": "running", **next(answers)}
        route.fulfill(json=body)  # type: ignore[attr-defined]

    page.route(f"**/api/executions/{run.pk}/log/*", answer)
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.goto(f"/admin/jobs/execution/{run.pk}/change/")
    log = page.locator("#karmchari-log")
    expect(log).to_contain_text("line 502", timeout=10_000)
    assert log.inner_text() == (
        "line 001\n[... 5000 bytes not kept ...]\nine 501\nline 502\n"
    )
