"""A real browser (Debian's Chromium, driven by Playwright) against a live server and
a real Celery worker.

Playwright's own browser download does not work here, so the tests use
/usr/bin/chromium and skip, saying why, when it or Playwright is missing.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.integration.conftest import Processes

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "a-browser-test-password"

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - requirements-dev.txt installs it
    sync_playwright = None

SKIP_REASON = "browser tests SKIPPED: " + (
    "Playwright is not installed (pip install -r requirements-dev.txt)"
    if sync_playwright is None
    else f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
)
AVAILABLE = sync_playwright is not None and CHROMIUM.exists()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if AVAILABLE:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(skip)


@pytest.fixture
def operator(transactional_db: None) -> User:
    return User.objects.create_superuser("operator", "op@example.com", PASSWORD)


@pytest.fixture
def queue() -> str:
    return f"br-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def processes(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        sys.stderr.write(procs.logs())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[Any]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where pages are photographed: KARMCHARI_SCREENSHOTS (e.g. docs/screenshots,
    to refresh the README's pictures), else the test's temporary directory."""
    target = os.environ.get("KARMCHARI_SCREENSHOTS")
    path = Path(target) if target else tmp_path / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def browser(
    live_server: Any, operator: User, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Browser]:
    # Playwright's sync API runs an event loop in this thread; the test's own ORM
    # calls are plain synchronous code all the same.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    assert sync_playwright is not None
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, live_server: Any) -> Iterator[Page]:
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()
