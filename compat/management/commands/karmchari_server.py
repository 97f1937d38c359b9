"""Serve the original Karmchari's routes (/registerJob, /jobState) on their own port.

The Go original listened on :51463; its clients often hard-code that port. This runs
a web server for just those two routes (compat/karmchari_asgi.py) beside the main one;
both share the same database and Redis, so a job registered here is the same job in
the admin and /api/. (The original's `shost` Redis option is REDIS_URL, set for the
whole installation.)
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from karmchari_site.env import env_int, env_str


class Command(BaseCommand):
    help = "Serve /registerJob and /jobState on their own port (default 51463)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--port",
            "-port",
            type=int,
            default=env_int("KARMCHARI_LEGACY_PORT", 51463, minimum=1),
            help="Port (default KARMCHARI_LEGACY_PORT or 51463, the original's).",
        )
        parser.add_argument(
            "--host",
            default=env_str("KARMCHARI_HOST") or "127.0.0.1",
            help="Address to bind (default 127.0.0.1).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        import uvicorn

        self.stdout.write(
            f"Karmchari legacy routes on http://{options['host']}:{options['port']}"
            "/registerJob and /jobState"
        )
        sys.stdout.flush()
        uvicorn.run(
            "compat.karmchari_asgi:application",
            host=options["host"],
            port=options["port"],
            log_level="info",
            access_log=False,
        )
