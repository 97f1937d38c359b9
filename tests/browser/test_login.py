"""Guessing passwords at the admin's login form, in a real browser: after the limit,
even the right password is refused from that address, with the reason on the page."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.conftest import PASSWORD, SKIP_REASON

if TYPE_CHECKING:
    from playwright.sync_api import Page

expect = pytest.importorskip("playwright.sync_api", reason=SKIP_REASON).expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sign_in(page: Page, password: str) -> None:
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", password)
    page.click("input[type=submit]")


def test_it_refuses_the_login_form_after_repeated_bad_passwords(
    page: Page, settings: Any
) -> None:
    settings.KARMCHARI_AUTH_FAILURE_LIMIT = 3
    for _ in range(3):
        sign_in(page, "a wrong guess")
        expect(page.locator(".errornote")).to_contain_text("correct username")
    sign_in(page, PASSWORD)
    expect(page.locator(".errornote")).to_contain_text(
        "Too many failed authentication attempts"
    )
    expect(page.locator("#id_password")).to_be_visible()  # still the login page
    page.goto("/admin/")
    expect(page).to_have_url("/admin/login/?next=/admin/", timeout=5000)
