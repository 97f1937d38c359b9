"""Run the whole system in one command: embedded Redis, web, worker and beat.

For a laptop or a single small host. Production runs the roles as separate processes
(see docs/operations.md); this command supervises them the same way: if one child dies,
it stops the others and exits non-zero rather than limping on.
"""

from __future__ import annotations

import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from karmchari_site import embedded
from karmchari_site.env import env_int, env_str

# Ctrl-C: the worker's runs get this long to end, then are killed (jobs/shutdown.py),
# unless KARMCHARI_WORKER_STOP_GRACE says otherwise; none outlives the command.
STOP_GRACE = 5.0
# Seconds each role gets to stop after that, before it is killed.
STOP_TIMEOUT = 15.0


def worker_stop_grace() -> float:
    grace = float(settings.KARMCHARI_WORKER_STOP_GRACE)
    return STOP_GRACE if math.isinf(grace) else grace


def _check_port_free(host: str, port: int) -> None:
    """Before starting anything: with the port taken, the web server would exit at
    once while whatever listens there answered "Karmchari is up"."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CommandError(
                f"Cannot listen on {host}:{port} ({exc.strerror or exc}): is something "
                "else using it? Choose another with --port or KARMCHARI_PORT."
            ) from None


class Command(BaseCommand):
    help = "Start Karmchari: embedded Redis (if no REDIS_URL), web, worker and beat."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--port",
            type=int,
            default=None,
            help="Web port on 127.0.0.1 (default: KARMCHARI_PORT or 8000).",
        )
        parser.add_argument(
            "--host",
            default=env_str("KARMCHARI_HOST") or "127.0.0.1",
            help="Address the web server binds to (default 127.0.0.1).",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=env_int("KARMCHARI_WORKER_CONCURRENCY", 4, minimum=1),
            help="Worker processes (default 4).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        port = options["port"] or env_int("KARMCHARI_PORT", 8000, minimum=1)
        _check_port_free(options["host"], port)
        data_dir: Path = settings.DATA_DIR
        data_dir.mkdir(parents=True, exist_ok=True)
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopping = False
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

        try:
            if settings.EMBEDDED_REDIS:
                if embedded.is_running(data_dir):
                    raise CommandError(
                        f"An embedded Redis already answers on "
                        f"{embedded.socket_path(data_dir)}: is another standalone "
                        "running with this KARMCHARI_DATA_DIR?"
                    )
                self.children.append(("redis", embedded.start(data_dir)))
            call_command("migrate", interactive=False, verbosity=0)
            call_command("collectstatic", interactive=False, verbosity=0)
            self._ensure_admin()
            self._start_roles(options["host"], port, options["concurrency"])
            code = 1
            if self._wait_for_web(options["host"], port):
                base = f"http://{options['host']}:{port}"
                self.stdout.write(
                    self.style.SUCCESS(
                        f"Karmchari is up.\n  Admin:    {base}/admin/\n"
                        f"  API docs: {base}/api/docs/\n  Data:     {data_dir}\n"
                        "Press Ctrl-C to stop."
                    )
                )
                code = self._supervise()
            elif self.stopping:
                code = 0
        finally:
            self._stop_all()
        if code:
            sys.exit(code)

    def _ensure_admin(self) -> None:
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("Log in with your existing admin account.")
            return
        username = os.environ.get("KARMCHARI_ADMIN_USER", "admin")
        password = os.environ.get("KARMCHARI_ADMIN_PASSWORD") or secrets.token_urlsafe(
            12
        )
        User.objects.create_superuser(username=username, email="", password=password)
        shown = (
            "(from KARMCHARI_ADMIN_PASSWORD)"
            if os.environ.get("KARMCHARI_ADMIN_PASSWORD")
            else password
        )
        self.stdout.write(
            self.style.WARNING(
                f"Created admin login: user {username!r}, password {shown}\n"
                "This password is shown once; change it in the admin."
            )
        )

    def _start_roles(self, host: str, port: int, concurrency: int) -> None:
        python = sys.executable
        env = {**os.environ, "KARMCHARI_DATA_DIR": str(settings.DATA_DIR)}
        # Links in notifications point at this web server unless told otherwise.
        env.setdefault("KARMCHARI_BASE_URL", f"http://{host}:{port}")
        env["KARMCHARI_WORKER_STOP_GRACE"] = f"{worker_stop_grace():g}"
        roles = {
            "web": [
                python,
                "-m",
                "uvicorn",
                "karmchari_site.asgi:application",
                "--host",
                host,
                "--port",
                str(port),
                "--workers",
                "2",
                "--no-access-log",
                "--timeout-graceful-shutdown",
                "5",
            ],
            "worker": [
                python,
                "-m",
                "celery",
                "-A",
                "karmchari_site",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(concurrency),
                "--hostname",
                f"karmchari-{port}@%h",
            ],
            "beat": [
                python,
                "-m",
                "celery",
                "-A",
                "karmchari_site",
                "beat",
                "--loglevel",
                "INFO",
                "--scheduler",
                "jobs.scheduler:JobScheduler",
                "--pidfile=",
            ],
        }
        for name, command in roles.items():
            self.children.append((name, subprocess.Popen(command, env=env)))

    def _dead_child(self) -> str | None:
        for name, child in self.children:
            code = child.poll()
            if code is not None:
                return f"{name} (pid {child.pid}) exited with code {code}"
        return None

    def _wait_for_web(self, host: str, port: int, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping:
            dead = self._dead_child()
            if dead:
                self.stderr.write(f"{dead} while starting; stopping everything.")
                return False
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.1)
        if not self.stopping:
            self.stderr.write(f"The web server did not listen on {host}:{port}.")
        return False

    def _supervise(self) -> int:
        while not self.stopping:
            dead = self._dead_child()
            if dead:
                self.stderr.write(f"{dead}; stopping everything.")
                return 1
            time.sleep(0.5)
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _stop_all(self) -> None:
        # Redis last: the others flush to it while they stop.
        roles = [c for c in self.children if c[0] != "redis"]
        redis = [c for c in self.children if c[0] == "redis"]
        for group in (roles, redis):
            for _, child in group:
                if child.poll() is None:
                    child.terminate()
            # The worker's runs get their grace, then their kill's.
            timeout = STOP_TIMEOUT + worker_stop_grace() + settings.KARMCHARI_KILL_GRACE
            deadline = time.monotonic() + timeout
            for name, child in group:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.stderr.write(f"{name} did not stop in time; killing it.")
                    child.kill()
                    child.wait()
