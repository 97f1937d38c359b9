"""Job secrets and per-app access as an operator meets them in the admin, in a real
browser: a secret typed into the job's secrets inline is never shown again and is
masked in the live log of a run on a real worker; a user granted one app sees only
that app's jobs, pages and figures."""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.utils import timezone

from jobs import secrets, services, stats
from jobs.models import App, Execution, Job, JobSecret, Schedule
from jobs.runners import SECRET_MASK
from tests.browser.conftest import PASSWORD, SKIP_REASON
from tests.integration.conftest import Processes

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page
    from pytest_django.fixtures import Settings

expect = pytest.importorskip("playwright.sync_api", reason=SKIP_REASON).expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page: Page, username: str) -> None:
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#k-figures")).to_be_visible()


def badge(page: Page) -> Any:
    return expect(page.locator(".field-status_badge .k-badge"))


def test_it_keeps_a_secret_out_of_the_console_and_the_live_log(
    page: Page, processes: Processes, queue: str, screenshots: Path
) -> None:
    value = f"s3cret-{uuid.uuid4().hex}"
    processes.worker(queue)
    log_in(page, "operator")

    page.goto("/admin/jobs/app/add/")
    page.fill("#id_name", "vault")
    page.click("input[name=_save]")
    expect(page.locator("ul.messagelist")).to_contain_text("was added successfully")

    page.goto("/admin/jobs/job/add/")
    page.select_option("#id_app", label="vault")
    page.fill("#id_name", "tokened")
    page.select_option("#id_kind", "shell")
    # The sleep keeps the run going while its first line is on the page, so the
    # line is read from the live tail, not from the stored output.
    command = 'echo "token=$API_TOKEN"; sleep 3'
    page.fill("#id_spec", json.dumps({"command": command}))
    page.fill("#id_queue", queue)
    page.click("#secrets-group .add-row a")
    page.fill("#id_secrets-0-name", "API_TOKEN")
    page.fill("#id_secrets-0-new_value", value)
    page.click("input[name=_continue]")
    expect(page.locator("ul.messagelist")).to_contain_text("was added successfully")

    secret = JobSecret.objects.get(job__name="tokened", name="API_TOKEN")
    assert value not in secret.value and secrets.decrypt(secret.value) == value
    password = page.locator("#id_secrets-0-new_value")
    expect(page.locator("#id_secrets-0-name")).to_have_value("API_TOKEN")
    expect(password).to_have_attribute("type", "password")
    expect(password).to_have_value("")
    assert value not in page.content() and secret.value not in page.content()
    page.screenshot(path=str(screenshots / "job-secrets.png"), full_page=True)
    job_url = page.url

    page.click("#k-run")
    expect(page.locator("ul.messagelist")).to_contain_text("Started tokened as #")
    assert re.search(r"/admin/jobs/execution/\d+/change/$", page.url)
    log = page.locator("#karmchari-log")
    expect(log).to_contain_text("token=***", timeout=30_000)
    expect(page.locator("#k-live")).to_have_text("(live)")
    badge(page).to_have_text("succeeded")
    assert value not in log.inner_text()
    assert value not in page.content()
    # The whole log read again once the run is over, and the output it stored.
    page.reload()
    expect(log).to_contain_text("token=***")
    assert value not in page.content()
    run = Execution.objects.get(job__name="tokened")
    assert "token=***" in run.output and value not in run.output

    # Edit the job without typing the secret: the stored value stays. The new
    # command compares a digest, so the value never appears in the spec.
    digest = hashlib.sha256(value.encode()).hexdigest()
    check = (
        f'test "$(printf %s "$API_TOKEN" | sha256sum | cut -c1-64)" = {digest} '
        "&& echo secret-kept || echo secret-lost"
    )
    page.goto(job_url)
    expect(page.locator("#id_secrets-0-new_value")).to_have_value("")
    page.fill("#id_spec", json.dumps({"command": check}))
    page.click("input[name=_continue]")
    expect(page.locator("ul.messagelist")).to_contain_text("was changed successfully")
    expect(page.locator("#id_secrets-0-name")).to_have_value("API_TOKEN")
    expect(page.locator("#id_secrets-0-new_value")).to_have_value("")
    assert value not in page.content()
    # Not even encrypted again: the row is as it was.
    assert JobSecret.objects.get(pk=secret.pk).value == secret.value

    page.click("#k-run")
    expect(page.locator("ul.messagelist")).to_contain_text("Started tokened as #")
    badge(page).to_have_text("succeeded")
    expect(log).to_contain_text("secret-kept")
    expect(log).not_to_contain_text("secret-lost")


def operator_role() -> Group:
    """The "operator" role as migration 0009 makes it. A transactional test's flush
    empties every table, and post_migrate brings back permissions, not the groups a
    data migration made: so the role is made again when an earlier test removed it."""
    roles: dict[str, list[str]] = importlib.import_module(
        "jobs.migrations.0009_roles"
    ).ROLES
    group, _ = Group.objects.get_or_create(name="operator")
    for code in roles["operator"]:
        app_label, codename = code.split(".")
        group.permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return group


@pytest.fixture
def other_page(browser: Browser, live_server: Any) -> Iterator[Page]:
    """A second browser, so two users are logged in at once."""
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


def test_it_shows_a_user_only_the_apps_granted_to_them(
    page: Page,
    other_page: Page,
    settings: Settings,
    screenshots: Path,
    make_app: Callable[..., App],
    make_job: Callable[..., Job],
    make_execution: Callable[..., Execution],
    make_schedule: Callable[..., Schedule],
) -> None:
    # The live server runs in this process: it reads the setting as changed here.
    settings.KARMCHARI_PER_APP_ACCESS = True
    mine, theirs = make_app("mine"), make_app("theirs")
    my_job = make_job(app=mine, name="my-job")
    services.job_update(job=my_job, secrets={"DB_PASSWORD": "hunter2-of-mine"})
    their_job = make_job(app=theirs, name="their-job", last_error_at=timezone.now())
    make_execution(job=my_job, status=Execution.Status.RUNNING)
    make_execution(job=their_job, status=Execution.Status.RUNNING)
    make_schedule("0 6 * * *", job=their_job)
    user = User.objects.create_user("ravi", password=PASSWORD, is_staff=True)
    user.groups.add(operator_role())
    mine.users.add(user)
    stats.stats_invalidate(job_id=None)  # figures cached by an earlier test

    # Everyone's figures first (the superuser sees every app): cached for a few
    # seconds, and never to stand in for a restricted user's.
    log_in(other_page, "operator")
    expect(other_page.locator("#k-jobs-enabled")).to_have_text("2")
    expect(other_page.locator("#k-running")).to_have_text("2")
    expect(other_page.locator("#k-failing")).to_contain_text("theirs / their-job")
    expect(other_page.locator("#k-upcoming")).to_contain_text("theirs / their-job")

    log_in(page, "ravi")
    expect(page.locator("#k-jobs-enabled")).to_have_text("1")
    expect(page.locator("#k-running")).to_have_text("1")
    expect(page.locator("#k-failing")).not_to_contain_text("their-job")
    expect(page.locator("#k-upcoming")).not_to_contain_text("their-job")
    assert "theirs" not in page.content()

    page.goto("/admin/jobs/job/")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("my-job")
    assert "their-job" not in page.content()
    page.goto("/admin/jobs/execution/")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("mine / my-job")

    # A page of another app answers as a missing one (the admin's way: back to
    # the index, with a note), not as forbidden.
    page.goto(f"/admin/jobs/job/{their_job.pk}/change/")
    assert page.url.endswith("/admin/")
    expect(page.locator("ul.messagelist")).to_contain_text(
        f"Job with ID “{their_job.pk}” doesn\N{RIGHT SINGLE QUOTATION MARK}t exist. "
        "Perhaps it was deleted?"
    )
    expect(page.locator("#k-jobs-enabled")).to_have_text("1")
    assert "their-job" not in page.content()
    page.screenshot(path=str(screenshots / "per-app-access.png"), full_page=True)

    # Their own job's page opens, read-only for the role (a shell job), with the
    # secret's name and never its value.
    page.goto(f"/admin/jobs/job/{my_job.pk}/change/")
    expect(page.locator("#content h1")).to_contain_text("View job")
    expect(page.locator("#secrets-group td.field-name")).to_have_text("DB_PASSWORD")
    expect(page.locator("#secrets-group td.field-new_value")).to_have_text(SECRET_MASK)
    assert "hunter2-of-mine" not in page.content()
