"""Karmchari settings: one module, driven by the environment.

Nothing set: SQLite and an embedded Redis in KARMCHARI_DATA_DIR (default ./data), so a
fresh checkout runs with `make run`. DATABASE_URL, REDIS_URL and CELERY_BROKER_URL move
it onto real servers. Every variable is listed in .env.example.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
from pathlib import Path
from typing import Any

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from karmchari_site import embedded
from karmchari_site.env import (
    LOG_LEVELS,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_path,
    env_rate,
    env_str,
    env_timezone,
    env_url,
)

# Lets `admin.ModelAdmin[Job]` and friends be subscripted at run time, as mypy wants.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = env_path("KARMCHARI_DATA_DIR", BASE_DIR / "data")

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off: generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`."
        )
    SECRET_KEY = "insecure-development-key-set-SECRET_KEY-in-production"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "agents",
    "jobs",
    "compat",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "karmchari_site.errors.ApiNotFoundMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before anything reads the query or the form: text PostgreSQL cannot hold.
    "karmchari_site.text.RefuseUnstorableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Before CommonMiddleware's redirect to the slashed URL (which loses a POST).
    "karmchari_site.middleware.ApiTrailingSlashMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "audit.middleware.AuditMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "karmchari_site.urls"
WSGI_APPLICATION = "karmchari_site.wsgi.application"
ASGI_APPLICATION = "karmchari_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------

_DATABASE_SCHEMES = {"sqlite", "postgres", "postgresql", "pgsql"}
DATABASE_URL = env_url(
    "DATABASE_URL",
    f"sqlite:///{DATA_DIR / 'karmchari.sqlite3'}",
    schemes=_DATABASE_SCHEMES,
)
try:
    _database: dict[str, Any] = dict(
        dj_database_url.parse(DATABASE_URL, conn_max_age=60)
    )
except ValueError as exc:  # dj_database_url.ParseError among them
    raise ImproperlyConfigured(f"DATABASE_URL cannot be read: {exc}") from None
_database["CONN_HEALTH_CHECKS"] = True
if _database["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share one SQLite file in standalone mode: WAL lets readers
    # run beside the writer, IMMEDIATE takes the write lock at BEGIN (no upgrade
    # deadlock), and the busy timeout waits instead of failing with "locked".
    try:
        Path(_database["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImproperlyConfigured(
            f"Cannot make the folder of the SQLite database {_database['NAME']!r} "
            f"(KARMCHARI_DATA_DIR, DATABASE_URL): {exc.strerror or exc}."
        ) from None
    _database["CONN_MAX_AGE"] = 0
    _database["OPTIONS"] = {
        "timeout": env_float("KARMCHARI_SQLITE_TIMEOUT", 20.0),
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Integration tests run real worker processes against the test database, so it
    # must be a file they can open too, not SQLite's default in-memory test database.
    _database["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache, live state, broker ------------------------------------------------

_REDIS_SCHEMES = {"redis", "rediss", "unix"}
EMBEDDED_REDIS = not env_str("REDIS_URL")
REDIS_URL = (
    embedded.cache_url(DATA_DIR)
    if EMBEDDED_REDIS
    else env_url("REDIS_URL", "", schemes=_REDIS_SCHEMES)
)

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env_str("KARMCHARI_CACHE_PREFIX", "karmchari"),
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "SOCKET_CONNECT_TIMEOUT": 2,
            "SOCKET_TIMEOUT": 2,
            # Redis is for speed: when it is down, pages fall back to the database.
            "IGNORE_EXCEPTIONS": True,
        },
    }
}
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True


def _default_broker() -> str:
    if EMBEDDED_REDIS:
        return embedded.broker_url(DATA_DIR)
    if REDIS_URL.startswith("unix://"):
        return "redis+socket://" + REDIS_URL.removeprefix("unix://")
    return REDIS_URL


CELERY_BROKER_URL = env_url(
    "CELERY_BROKER_URL",
    _default_broker(),
    schemes={"redis", "rediss", "redis+socket", "amqp", "amqps", "pyamqp"},
)
CELERY_TASK_IGNORE_RESULT = True


def _default_result_backend() -> str:
    # Only task jobs store results (sent with ignore_result=False, see
    # jobs/runners/task.py); everything else keeps CELERY_TASK_IGNORE_RESULT.
    if EMBEDDED_REDIS:
        return f"redis+socket://{embedded.socket_path(DATA_DIR)}?virtual_host=0"
    if REDIS_URL.startswith("unix://"):
        return "redis+socket://" + REDIS_URL.removeprefix("unix://")
    return REDIS_URL


CELERY_RESULT_BACKEND = env_url(
    "CELERY_RESULT_BACKEND",
    _default_result_backend(),
    schemes={"redis", "rediss", "redis+socket"},
)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
# One task at a time per process: jobs are long, and a prefetched message would wait
# behind a running job instead of going to an idle worker.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fixup closes every database connection before and after every task
# unless this is set: a new PostgreSQL connection (a backend fork, several ms) for each
# run. With it, connections are closed only every this-many tasks, and in between
# karmchari_site/celery.py applies CONN_MAX_AGE and the health check per task, as
# Django does per request.
CELERY_DB_REUSE_MAX = 1000
# Redis brokers redeliver an unacked message after the visibility timeout. Jobs may run
# for hours; the claim in run_execution makes a redelivery a no-op anyway.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("KARMCHARI_VISIBILITY_TIMEOUT", 43200, minimum=60)
}

# --- Auth, API -----------------------------------------------------------------------

_VALIDATORS = "django.contrib.auth.password_validation"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"{_VALIDATORS}.UserAttributeSimilarityValidator"},
    {"NAME": f"{_VALIDATORS}.MinimumLengthValidator"},
    {"NAME": f"{_VALIDATORS}.CommonPasswordValidator"},
    {"NAME": f"{_VALIDATORS}.NumericPasswordValidator"},
]

REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header is what turns anonymous requests into
    # 401 (not 403) without making browsers pop a basic-auth dialog.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "jobs.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        "jobs.authentication.BasicAuthentication",
    ],
    # The password-for-token endpoint (per client address).
    "DEFAULT_THROTTLE_RATES": {
        "login": env_rate("KARMCHARI_LOGIN_RATE", "10/minute"),
    },
    "DEFAULT_PERMISSION_CLASSES": ["jobs.permissions.ModelPermissions"],
    "DEFAULT_PARSER_CLASSES": [
        "jobs.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
        "rest_framework.filters.SearchFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "jobs.pagination.LimitOffset",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "jobs.views.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Karmchari API",
    "DESCRIPTION": "Jobs, schedules, executions and agents.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models have a `kind` or a `status`: name each enum after its owner.
    "ENUM_NAME_OVERRIDES": {
        "JobKindEnum": "jobs.models.Job.Kind",
        "ScheduleKindEnum": "jobs.models.Schedule.Kind",
        "ExecutionStatusEnum": "jobs.models.Execution.Status",
        "AgentStatusEnum": "agents.models.Agent.Status",
    },
}

# --- Karmchari -----------------------------------------------------------------------

# Bytes of stdout and of stderr kept per execution (the tail; the head is dropped and
# the cut is marked).
KARMCHARI_OUTPUT_LIMIT = env_int("KARMCHARI_OUTPUT_LIMIT", 1_000_000, minimum=1024)
# Seconds between SIGTERM and SIGKILL when a job times out or is killed.
KARMCHARI_KILL_GRACE = env_float("KARMCHARI_KILL_GRACE", 10.0)
# Seconds a stopping worker (warm shutdown: SIGTERM, the first Ctrl-C) lets its runs
# end before it kills them (jobs/shutdown.py). Unset: it waits for them, as Celery
# does. Set it below your supervisor's stop timeout minus KARMCHARI_KILL_GRACE.
KARMCHARI_WORKER_STOP_GRACE = env_float("KARMCHARI_WORKER_STOP_GRACE", math.inf)
# Longest wait before an automatic retry (seconds): a job's retry_backoff doubles per
# attempt up to this (Celery's retry_backoff_max is the same idea, also 600).
KARMCHARI_RETRY_BACKOFF_MAX = env_float(
    "KARMCHARI_RETRY_BACKOFF_MAX", 600.0, minimum=1.0
)
# Environment variables a shell job inherits from the worker; the rest (database
# passwords, SECRET_KEY...) stay out of the job's reach.
KARMCHARI_SHELL_INHERIT_ENV = env_list(
    "KARMCHARI_SHELL_INHERIT_ENV", ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER"]
)
# Agents: seconds between worker heartbeats (live stats to Redis); an agent silent for
# the window is marked offline and its running executions lost. The database row is
# refreshed every KARMCHARI_AGENT_DB_SECONDS (every beat while Redis is down).
KARMCHARI_HEARTBEAT_SECONDS = env_float("KARMCHARI_HEARTBEAT_SECONDS", 5.0, minimum=0.1)
KARMCHARI_AGENT_WINDOW_SECONDS = env_float(
    "KARMCHARI_AGENT_WINDOW_SECONDS", 3 * KARMCHARI_HEARTBEAT_SECONDS
)
if KARMCHARI_AGENT_WINDOW_SECONDS <= KARMCHARI_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured(
        f"KARMCHARI_AGENT_WINDOW_SECONDS={KARMCHARI_AGENT_WINDOW_SECONDS} must be "
        f"longer than KARMCHARI_HEARTBEAT_SECONDS={KARMCHARI_HEARTBEAT_SECONDS}, or "
        "healthy agents go offline between beats."
    )
KARMCHARI_AGENT_DB_SECONDS = env_float("KARMCHARI_AGENT_DB_SECONDS", 30.0)

# Scheduling: how late a slot may still start when its schedule sets no epsilon, and
# how far back (and how many) missed slots `run_all` catches up.
KARMCHARI_DEFAULT_EPSILON = env_float("KARMCHARI_DEFAULT_EPSILON", 60.0)
KARMCHARI_CATCHUP_WINDOW = env_float("KARMCHARI_CATCHUP_WINDOW", 86400.0)
KARMCHARI_CATCHUP_MAX = env_int("KARMCHARI_CATCHUP_MAX", 1000, minimum=1)
# Seconds ahead of its slot that beat fires a run (sent with its ETA), so bursts
# start on time; 0 fires at the slot.
KARMCHARI_FIRE_AHEAD = env_float("KARMCHARI_FIRE_AHEAD", 1.0)
# Failed authentications (token, basic, admin login) allowed within the window
# (seconds): per client address for one username or token, before those credentials
# get 429 from there; and per address for all of them, before the address does.
KARMCHARI_AUTH_FAILURE_LIMIT = env_int("KARMCHARI_AUTH_FAILURE_LIMIT", 10, minimum=1)
KARMCHARI_AUTH_FAILURE_ADDRESS_LIMIT = env_int(
    "KARMCHARI_AUTH_FAILURE_ADDRESS_LIMIT", 100, minimum=1
)
KARMCHARI_AUTH_FAILURE_WINDOW = env_int("KARMCHARI_AUTH_FAILURE_WINDOW", 300, minimum=1)
# Retention, per job unless the job or its app says otherwise: finished executions
# kept (succeeded, and all others), and days kept; 0 is no limit. Beat has a worker
# prune the rest every KARMCHARI_PRUNE_SECONDS.
KARMCHARI_KEEP_SUCCEEDED = env_int("KARMCHARI_KEEP_SUCCEEDED", 100)
KARMCHARI_KEEP_FAILED = env_int("KARMCHARI_KEEP_FAILED", 100)
KARMCHARI_KEEP_DAYS = env_int("KARMCHARI_KEEP_DAYS", 0)
# Days the notification delivery log keeps sent and failed entries; 0 keeps them all.
KARMCHARI_KEEP_DELIVERY_DAYS = env_int("KARMCHARI_KEEP_DELIVERY_DAYS", 30)
KARMCHARI_PRUNE_SECONDS = env_float("KARMCHARI_PRUNE_SECONDS", 3600.0, minimum=1.0)
# Seconds an execution (or a notification never attempted) may stay pending before
# beat's outbox sweeps send it again.
KARMCHARI_OUTBOX_SECONDS = env_float("KARMCHARI_OUTBOX_SECONDS", 60.0, minimum=1.0)

# --- Execution engine (control bus, live output, runners, retries) -------------------

# Command prefixes shell jobs may run (e.g. "/opt/jobs/,make"); empty allows any.
KARMCHARI_SHELL_ALLOWED_COMMANDS = env_list("KARMCHARI_SHELL_ALLOWED_COMMANDS", [])
# Shell env variables and HTTP headers whose names match are taken out of a job's
# spec when it is saved and kept as the job's (encrypted) secrets.
KARMCHARI_SECRET_ENV_PATTERN = env_str(
    "KARMCHARI_SECRET_ENV_PATTERN", r"(?i)pass|secret|token|key|credential|auth"
)
# Fernet keys for job secrets, comma-separated: the first encrypts, all decrypt (add a
# new key first, run `manage.py rotate_secrets`, then drop the old one). A key derived
# from SECRET_KEY also decrypts, and encrypts while this is empty (so a fresh checkout
# works); then changing SECRET_KEY makes the stored secrets unreadable (the deploy
# checks warn, karmchari.W001).
KARMCHARI_SECRETS_KEYS = env_list("KARMCHARI_SECRETS_KEYS", [])
for _position, _key in enumerate(KARMCHARI_SECRETS_KEYS, start=1):
    try:
        _valid_key = len(base64.urlsafe_b64decode(_key.encode())) == 32
    except (ValueError, binascii.Error):
        _valid_key = False
    if not _valid_key:
        # Never echo the value: it is a key, or a typo of one.
        raise ImproperlyConfigured(
            f"KARMCHARI_SECRETS_KEYS: key {_position} is not a Fernet key (32 bytes, "
            "url-safe base64). Generate one with `python -c 'from cryptography."
            "fernet import Fernet; print(Fernet.generate_key().decode())'`."
        )

# Seconds between a worker's reads of desired_state from the database: when Redis is
# down (the fallback) and when it is up (a safety net for lost pub/sub messages).
# The run's claim and end are prepared statements on PostgreSQL (parsed and planned
# once per connection). Off for a pooler that cannot keep them (PgBouncer before
# 1.21 in transaction mode).
KARMCHARI_PREPARED_STATEMENTS = env_bool("KARMCHARI_PREPARED_STATEMENTS", True)
# Seconds a run's end may wait to forget its job's cached stats and record its
# duration in Redis, sent with other ends' in one batch (jobs/redis_batch.py);
# 0 sends each at once.
KARMCHARI_REDIS_BATCH_SECONDS = env_float("KARMCHARI_REDIS_BATCH_SECONDS", 0.05)
KARMCHARI_CONTROL_DB_INTERVAL = env_float("KARMCHARI_CONTROL_DB_INTERVAL", 2.0)
KARMCHARI_CONTROL_DB_INTERVAL_SUBSCRIBED = env_float(
    "KARMCHARI_CONTROL_DB_INTERVAL_SUBSCRIBED", 5.0
)
# Seconds between flushes of live output to the database.
KARMCHARI_LOG_FLUSH_SECONDS = env_float("KARMCHARI_LOG_FLUSH_SECONDS", 1.0)
# Seconds the Redis copy of a finished execution's log is kept.
KARMCHARI_LOG_REDIS_TTL = env_int("KARMCHARI_LOG_REDIS_TTL", 3600, minimum=1)
# Seconds an SSE log stream stays open before the client must reconnect.
KARMCHARI_LOG_STREAM_SECONDS = env_float("KARMCHARI_LOG_STREAM_SECONDS", 300.0)
# Celery task names that task jobs may send (exact names; empty allows none).
KARMCHARI_ALLOWED_TASKS = env_list("KARMCHARI_ALLOWED_TASKS", [])
# Bytes of an HTTP job's response body kept as its output.
KARMCHARI_HTTP_BODY_LIMIT = env_int("KARMCHARI_HTTP_BODY_LIMIT", 65536, minimum=0)
# Seconds the stats endpoints are cached (changes invalidate them sooner).
KARMCHARI_STATS_CACHE_SECONDS = env_int("KARMCHARI_STATS_CACHE_SECONDS", 60, minimum=0)

# --- Compatibility APIs (compat/, see docs/compat.md) -------------------------------

COMPAT_APIS = ("karmchari", "kala", "jobstreamer")
# Compat APIs served without authentication, for legacy clients on a trusted network
# (comma-separated: karmchari, kala, jobstreamer). A system check warns while any is.
KARMCHARI_COMPAT_OPEN = env_list("KARMCHARI_COMPAT_OPEN", [])
if unknown_compat := sorted(set(KARMCHARI_COMPAT_OPEN) - set(COMPAT_APIS)):
    raise ImproperlyConfigured(
        f"KARMCHARI_COMPAT_OPEN names unknown APIs {unknown_compat}: use any of "
        f"{', '.join(COMPAT_APIS)}."
    )
# The app that holds Karmchari (one job per type) and Kala jobs.
KARMCHARI_COMPAT_APP = env_str("KARMCHARI_COMPAT_APP", "default")
# The origin (or "*") whose browser pages may call the JobStreamer API, as the
# original's access-control-allow-origin; empty: no CORS headers, OPTIONS is a 405.
KARMCHARI_JOBSTREAMER_CORS_ORIGIN = env_str("KARMCHARI_JOBSTREAMER_CORS_ORIGIN", "")
_cors_scheme, _, _cors_host = KARMCHARI_JOBSTREAMER_CORS_ORIGIN.partition("://")
if KARMCHARI_JOBSTREAMER_CORS_ORIGIN not in ("", "*") and (
    _cors_scheme not in ("http", "https")
    or not _cors_host
    or any(char in _cors_host for char in "/,* \t")
):
    raise ImproperlyConfigured(
        "KARMCHARI_JOBSTREAMER_CORS_ORIGIN must be one origin such as "
        f"https://console.example.com, or *; got {KARMCHARI_JOBSTREAMER_CORS_ORIGIN!r}."
    )

# --- Per-app access (jobs/access.py, see docs/operations.md) ------------------------

# On: a user sees and acts only on the apps granted to them or to one of their groups
# (App.users, App.groups), unless a superuser or holding jobs.access_all_apps. Off:
# model permissions alone decide, over every app.
KARMCHARI_PER_APP_ACCESS = env_bool("KARMCHARI_PER_APP_ACCESS", False)

# --- Operations: metrics, notifications, dead-man's switch pings --------------------

# /metrics: a bearer token Prometheus sends, and/or client addresses or networks
# allowed without one (e.g. "127.0.0.1,10.0.0.0/8"). Neither set: /metrics is off.
KARMCHARI_METRICS_TOKEN = env_str("KARMCHARI_METRICS_TOKEN")
KARMCHARI_METRICS_ALLOW = env_list("KARMCHARI_METRICS_ALLOW", [])
for _network in KARMCHARI_METRICS_ALLOW:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"KARMCHARI_METRICS_ALLOW: {_network!r} is not an address or network."
        ) from None
# Notifications: a run is "slow" when it takes this many times the job's average.
KARMCHARI_NOTIFY_SLOW_FACTOR = env_float(
    "KARMCHARI_NOTIFY_SLOW_FACTOR", 3.0, minimum=1.0
)
# Webhook deliveries: seconds per attempt, attempts in all, first retry delay
# (doubling).
KARMCHARI_WEBHOOK_TIMEOUT = env_float("KARMCHARI_WEBHOOK_TIMEOUT", 10.0, minimum=0.1)
KARMCHARI_NOTIFY_MAX_ATTEMPTS = env_int("KARMCHARI_NOTIFY_MAX_ATTEMPTS", 5, minimum=1)
KARMCHARI_NOTIFY_RETRY_SECONDS = env_float("KARMCHARI_NOTIFY_RETRY_SECONDS", 10.0)
# Seconds between checks for late runs and late pings (run by beat's housekeeping).
KARMCHARI_NOTIFY_CHECK_SECONDS = env_float("KARMCHARI_NOTIFY_CHECK_SECONDS", 30.0)
# How long a worker may go on using its list of jobs and apps that have notification
# rules (the same process forgets it at once when it changes rules itself).
KARMCHARI_NOTIFY_RULES_CACHE_SECONDS = env_float(
    "KARMCHARI_NOTIFY_RULES_CACHE_SECONDS", 5.0, minimum=0.0
)
# Base URL put in notifications' links, e.g. https://karmchari.example.com
KARMCHARI_BASE_URL = env_str("KARMCHARI_BASE_URL", "http://127.0.0.1:8000")
# Email notifications use Django's mail settings.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "karmchari@localhost")

# --- Internationalisation, static files ----------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_timezone("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env_path("STATIC_ROOT", DATA_DIR / "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Production hardening (see docs/operations.md) -----------------------------------

SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https")
    if env_bool("KARMCHARI_BEHIND_TLS_PROXY", False)
    else None
)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {
        "handlers": ["console"],
        "level": env_choice("LOG_LEVEL", "INFO", choices=LOG_LEVELS),
    },
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Its DEBUG lines quote request URLs, where an http job may carry a secret.
        "urllib3": {"level": "INFO"},
    },
}
