"""Settings for the benchmarks: the project's, plus django-celery-beat (the baseline)
and an in-memory broker so publishing costs the same, and little, for both."""

from __future__ import annotations

from karmchari_site.settings import *  # noqa: F403
from karmchari_site.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "django_celery_beat"]
CELERY_BROKER_URL = "memory://"
LOGGING = {"version": 1, "disable_existing_loggers": False}
