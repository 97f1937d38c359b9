"""Settings are read once per process, so each case imports them in a fresh one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json
from django.conf import settings
print(json.dumps({
    "engine": settings.DATABASES["default"]["ENGINE"],
    "db": str(settings.DATABASES["default"]["NAME"]),
    "cache": settings.CACHES["default"]["LOCATION"],
    "broker": settings.CELERY_BROKER_URL,
    "embedded": settings.EMBEDDED_REDIS,
}))
"""


def load(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DEBUG", "SECRET_KEY"}
    }
    clean.update(
        KARMCHARI_DATA_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="karmchari_site.settings",
        **env,
    )
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + PROBE],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_defaults_to_sqlite_and_embedded_redis(tmp_path: Path) -> None:
    result = load(tmp_path)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["engine"] == "django.db.backends.sqlite3"
    assert values["db"] == str(tmp_path / "karmchari.sqlite3")
    assert values["cache"] == f"unix://{tmp_path}/redis.sock?db=0"
    assert values["broker"].startswith(f"redis+socket://{tmp_path}/redis.sock")
    assert values["embedded"] is True


def test_it_switches_to_real_servers(tmp_path: Path) -> None:
    result = load(
        tmp_path,
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/kc",
        REDIS_URL="redis://127.0.0.1:6379/3",
        CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//",
    )
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["engine"] == "django.db.backends.postgresql"
    assert values["cache"] == "redis://127.0.0.1:6379/3"
    assert values["broker"] == "amqp://guest:guest@127.0.0.1:5672//"
    assert values["embedded"] is False


def test_it_uses_redis_url_as_the_default_broker(tmp_path: Path) -> None:
    result = load(tmp_path, REDIS_URL="redis://127.0.0.1:6379/4")
    assert json.loads(result.stdout)["broker"] == "redis://127.0.0.1:6379/4"


def test_it_requires_a_secret_key_without_debug(tmp_path: Path) -> None:
    result = load(tmp_path, DEBUG="0")
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY must be set when DEBUG is off" in (
        result.stderr
    )


def test_it_fails_at_start_on_a_bad_database_url(tmp_path: Path) -> None:
    result = load(tmp_path, DATABASE_URL="mysql://root@localhost/x")
    assert result.returncode != 0
    assert "DATABASE_URL='mysql://root@localhost/x' has an unsupported scheme" in (
        result.stderr
    )


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"DATABASE_URL": "postgres://k:k@db:54x2/k"}, "DATABASE_URL cannot be read"),
        ({"TIME_ZONE": "Mars/Olympus"}, "TIME_ZONE='Mars/Olympus' is not a time zone"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL='verbose' is not one of"),
        ({"KARMCHARI_LOGIN_RATE": "ten"}, "KARMCHARI_LOGIN_RATE='ten' is not a rate"),
        ({"KARMCHARI_HEARTBEAT_SECONDS": "nan"}, "is not a finite number"),
    ],
)
def test_it_names_the_variable_of_a_bad_value_at_start(
    tmp_path: Path, env: dict[str, str], says: str
) -> None:
    result = load(tmp_path, **env)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("django.core.exceptions.ImproperlyConfigured:"), last
    assert says in last


def test_it_names_the_data_dir_it_cannot_make(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = load(blocker / "data")
    assert result.returncode != 0
    assert "KARMCHARI_DATA_DIR" in result.stderr.strip().splitlines()[-1]


def test_it_takes_an_empty_value_as_the_default(tmp_path: Path) -> None:
    """As an unset one: `TIME_ZONE=` and `SESSION_COOKIE_SECURE=` in a .env file."""
    result = load(
        tmp_path, TIME_ZONE="", LOG_LEVEL="", DEBUG="", SESSION_COOKIE_SECURE=""
    )
    assert result.returncode == 0, result.stderr


def test_it_fails_at_start_on_a_bad_boolean(tmp_path: Path) -> None:
    result = load(tmp_path, DEBUG="perhaps")
    assert result.returncode != 0
    assert "DEBUG='perhaps' is not a boolean" in result.stderr


def test_it_fails_at_start_on_a_bad_secrets_key_without_echoing_it(
    tmp_path: Path,
) -> None:
    good = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI="  # 32 bytes
    assert load(tmp_path, KARMCHARI_SECRETS_KEYS=good).returncode == 0
    result = load(tmp_path, KARMCHARI_SECRETS_KEYS=f"{good},not-a-key-at-all")
    assert result.returncode != 0
    assert "KARMCHARI_SECRETS_KEYS: key 2 is not a Fernet key" in result.stderr
    assert "not-a-key-at-all" not in result.stderr


def test_it_passes_the_deploy_checks_with_production_settings(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"}
    }
    env.update(
        KARMCHARI_DATA_DIR=str(tmp_path),
        DEBUG="0",
        SECRET_KEY="x" * 20 + "production-secret-key-" + "y" * 30,
        ALLOWED_HOSTS="karmchari.example.com",
        SECURE_SSL_REDIRECT="1",
        SECURE_HSTS_SECONDS="31536000",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="1",
        SECURE_HSTS_PRELOAD="1",
        KARMCHARI_SECRETS_KEYS="MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
