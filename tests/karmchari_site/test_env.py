from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from karmchari_site.env import env_bool, env_float, env_int, env_list, env_url


def test_it_reads_booleans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X", "Yes")
    assert env_bool("X", False) is True
    monkeypatch.setenv("X", "off")
    assert env_bool("X", True) is False
    monkeypatch.delenv("X")
    assert env_bool("X", True) is True


def test_it_refuses_a_nonsense_boolean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match=r"DEBUG='maybe' is not a boolean"):
        env_bool("DEBUG", False)


def test_it_refuses_a_nonsense_integer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("N", "ten")
    with pytest.raises(ImproperlyConfigured, match="N='ten' is not an integer"):
        env_int("N", 1)
    monkeypatch.setenv("N", "-3")
    with pytest.raises(ImproperlyConfigured, match="must be at least 0"):
        env_int("N", 1)


def test_it_refuses_a_nonsense_float(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("F", "1,5")
    with pytest.raises(ImproperlyConfigured, match="is not a number"):
        env_float("F", 1.0)


def test_it_splits_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTS", " a.example , b.example,, ")
    assert env_list("HOSTS", []) == ["a.example", "b.example"]


def test_it_checks_url_schemes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://root@localhost/x")
    with pytest.raises(ImproperlyConfigured, match="unsupported scheme 'mysql'"):
        env_url("DATABASE_URL", "", schemes={"postgres", "sqlite"})
    monkeypatch.setenv("DATABASE_URL", "postgres://u@h/db")
    assert env_url("DATABASE_URL", "", schemes={"postgres"}) == "postgres://u@h/db"


def test_it_takes_an_empty_boolean_as_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As the other readers do: `SESSION_COOKIE_SECURE=` keeps secure cookies."""
    monkeypatch.setenv("FLAG", "  ")
    assert env_bool("FLAG", True) is True
    assert env_bool("FLAG", False) is False


def test_it_refuses_a_number_that_is_not_finite(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for raw in ("nan", "inf", "-inf"):
        monkeypatch.setenv("SECONDS", raw)
        with pytest.raises(ImproperlyConfigured, match="not a finite number"):
            env_float("SECONDS", 1.0, minimum=-10.0)
