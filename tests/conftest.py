"""The shared world of the test suite: Redis, users, API clients and factories."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.core.cache import cache
from django_redis import get_redis_connection
from rest_framework.test import APIClient

from jobs import control
from jobs.logs import log_key
from jobs.models import App, Execution, Job, Schedule
from karmchari_site import embedded
from tests.receiver import Receiver
from tests.tokens import make_token


@pytest.fixture(scope="session", autouse=True)
def redis_server() -> Iterator[None]:
    """The embedded Redis for this run (or the real one named by REDIS_URL)."""
    process = None
    if settings.EMBEDDED_REDIS and not embedded.is_running(settings.DATA_DIR):
        process = embedded.start(settings.DATA_DIR)
    cache.clear()
    yield
    if process is not None:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(autouse=True)
def fast_passwords(request: pytest.FixtureRequest, settings: Any) -> None:
    """Test users' passwords hashed with MD5, not PBKDF2 (0.3 s a user, paid by every
    test that makes one). Not where a child process (a worker, a web server) checks
    a password the test made: it knows only the real hashers."""
    if any(
        request.node.get_closest_marker(marker)
        for marker in ("integration", "chaos", "browser")
    ):
        return
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_redis_state() -> None:
    """Login throttles, failed-auth counts and cached stats live in Redis: each test
    starts clean (job ids come back after a rolled-back test on SQLite). So does the
    thread's control subscription, as in a new worker thread: commands an earlier
    test sent to an execution id that comes back must not reach this test's."""
    control._drop_subscriber()
    cache.delete_pattern("*throttle_*")  # type: ignore[attr-defined]
    cache.delete_pattern("*authfail:*")  # type: ignore[attr-defined]
    cache.delete_pattern("*stats:*")  # type: ignore[attr-defined]
    # Live log streams, under their raw keys: an earlier test's run of the same id
    # must not show up in this one's log.
    redis = get_redis_connection("default")
    stale = list(redis.scan_iter(match=log_key(0).removesuffix("0") + "*", count=1000))
    if stale:
        redis.delete(*stale)


@pytest.fixture
def api(admin_user: User) -> APIClient:
    """An API client authenticated as a superuser, with a token."""
    client = APIClient()
    token = make_token(admin_user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


@pytest.fixture
def make_user(db: None) -> Callable[..., User]:
    """A user with these permissions (e.g. "jobs.view_job") and groups (e.g. the
    "editor" role), granted these apps (per-app access)."""

    def make(
        username: str = "member",
        *,
        perms: Iterable[str] = (),
        groups: Iterable[str] = (),
        apps: Iterable[App] = (),
        **fields: Any,
    ) -> User:
        user = User.objects.create_user(username, password="pw", **fields)
        for perm in perms:
            app_label, codename = perm.split(".")
            user.user_permissions.add(
                Permission.objects.get(
                    content_type__app_label=app_label, codename=codename
                )
            )
        for name in groups:
            user.groups.add(Group.objects.get_or_create(name=name)[0])
        for app in apps:
            app.users.add(user)
        return user

    return make


@pytest.fixture
def make_app(db: None) -> Callable[..., App]:
    def make(name: str = "default", **fields: Any) -> App:
        app, _ = App.objects.get_or_create(name=name, defaults=fields)
        return app

    return make


@pytest.fixture
def make_job(make_app: Callable[..., App]) -> Callable[..., Job]:
    counter = iter(range(1, 1_000_000))

    def make(command: str = "true", **fields: Any) -> Job:
        fields.setdefault("app", make_app())
        fields.setdefault("name", f"job-{next(counter)}")
        fields.setdefault("spec", {"command": command})
        return Job.objects.create(**fields)

    return make


@pytest.fixture
def make_execution(make_job: Callable[..., Job]) -> Callable[..., Execution]:
    def make(job: Job | None = None, **fields: Any) -> Execution:
        return Execution.objects.create(job=job or make_job(), **fields)

    return make


@pytest.fixture
def make_schedule(make_job: Callable[..., Job]) -> Callable[..., Schedule]:
    """A schedule saved through the service, so next_run_at is computed."""
    from jobs import services

    def make(
        expression: str = "* * * * *", job: Job | None = None, **fields: Any
    ) -> Schedule:
        fields.setdefault("kind", Schedule.Kind.CRON)
        return services.schedule_create(
            job=job or make_job(), expression=expression, **fields
        )

    return make


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook endpoint on 127.0.0.1 that records what it is sent."""
    server = Receiver()
    yield server
    server.stop()
