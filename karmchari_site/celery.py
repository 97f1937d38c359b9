"""The Celery app shared by the worker, beat and the web process (which sends tasks)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "karmchari_site.settings")

app = Celery("karmchari")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
