"""compat/checks.py: a warning while a compatibility API is open."""

from __future__ import annotations

from typing import Any

from compat.checks import check_compat_open


def test_it_is_silent_while_every_api_needs_credentials(settings: Any) -> None:
    settings.KARMCHARI_COMPAT_OPEN = []
    assert check_compat_open(None) == []


def test_it_warns_while_an_api_is_open(settings: Any) -> None:
    settings.KARMCHARI_COMPAT_OPEN = ["karmchari", "kala"]
    (warning,) = check_compat_open(None)
    assert warning.id == "karmchari.W101"
    assert "karmchari, kala" in warning.msg
