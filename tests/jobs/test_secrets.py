"""jobs/secrets.py: encryption, key rotation, the spec split, masking, and secrets
reaching real runs through the execution service (only there, never its records)."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import override_settings
from django_redis import get_redis_connection
from rest_framework.test import APIClient

from jobs import logs, services
from jobs.checks import check_secrets_keys
from jobs.models import (
    App,
    Execution,
    ExecutionLogChunk,
    Job,
    JobSecret,
    NotificationChannel,
)
from jobs.runners import SECRET_MASK
from jobs.runners.shell import ShellRunner
from jobs.secrets import (
    OutputMasker,
    SecretError,
    channel_signing_key,
    decrypt,
    encrypt,
    header_secret_name,
    job_secrets_reveal,
    job_secrets_set,
    mask_text,
    secrets_rotate,
    spec_split_secrets,
)

KEY_1 = Fernet.generate_key().decode()
KEY_2 = Fernet.generate_key().decode()


# --- Encryption and rotation ---------------------------------------------------------


@pytest.mark.django_db
def test_it_stores_values_encrypted(make_job: Callable[..., Job]) -> None:
    job = make_job()
    job_secrets_set(job=job, secrets={"DB_PASSWORD": "hunter2-plain"})
    token = JobSecret.objects.get(job=job).value
    assert "hunter2-plain" not in token
    assert token != encrypt("hunter2-plain")  # a fresh IV each time
    assert decrypt(token) == "hunter2-plain"
    assert job_secrets_reveal(job_id=job.pk) == {"DB_PASSWORD": "hunter2-plain"}


@pytest.mark.django_db
def test_it_rotates_keys_and_old_keys_still_decrypt_until_removed(
    make_job: Callable[..., Job],
) -> None:
    job = make_job()
    with override_settings(KARMCHARI_SECRETS_KEYS=[KEY_1]):
        job_secrets_set(job=job, secrets={"API_TOKEN": "t0ken-value"})
    token = JobSecret.objects.get(job=job).value
    assert Fernet(KEY_1.encode()).decrypt(token.encode()) == b"t0ken-value"

    with override_settings(KARMCHARI_SECRETS_KEYS=[KEY_2, KEY_1]):
        assert job_secrets_reveal(job_id=job.pk) == {"API_TOKEN": "t0ken-value"}
        out = io.StringIO()
        call_command("rotate_secrets", stdout=out)
        assert "Re-encrypted 1 secret(s)" in out.getvalue()
    token = JobSecret.objects.get(job=job).value
    assert Fernet(KEY_2.encode()).decrypt(token.encode()) == b"t0ken-value"
    with pytest.raises(InvalidToken):
        Fernet(KEY_1.encode()).decrypt(token.encode())

    with override_settings(KARMCHARI_SECRETS_KEYS=[KEY_2]):
        assert job_secrets_reveal(job_id=job.pk) == {"API_TOKEN": "t0ken-value"}


@pytest.mark.django_db
def test_it_moves_off_the_key_derived_from_secret_key(
    make_job: Callable[..., Job],
) -> None:
    job = make_job()
    job_secrets_set(job=job, secrets={"API_TOKEN": "derived-era"})
    with override_settings(KARMCHARI_SECRETS_KEYS=[KEY_1]):
        # Still readable before the rotation: the derived key always decrypts.
        assert job_secrets_reveal(job_id=job.pk) == {"API_TOKEN": "derived-era"}
        call_command("rotate_secrets", stdout=io.StringIO())
    token = JobSecret.objects.get(job=job).value
    assert Fernet(KEY_1.encode()).decrypt(token.encode()) == b"derived-era"
    # Neither KEY_1 nor the old SECRET_KEY left: unreadable.
    with override_settings(SECRET_KEY="another-key-" * 5), pytest.raises(SecretError):
        job_secrets_reveal(job_id=job.pk)


@pytest.mark.django_db
def test_it_names_what_no_key_can_decrypt_on_rotation(
    make_app: Callable[..., App],
) -> None:
    job = services.job_create(app=make_app("ops"), name="j", spec={"command": "x"})
    with override_settings(KARMCHARI_SECRETS_KEYS=[KEY_1]):
        job_secrets_set(job=job, secrets={"LOST_TOKEN": "gone"})
    err = io.StringIO()
    with override_settings(KARMCHARI_SECRETS_KEYS=[KEY_2]):
        with pytest.raises(CommandError, match="1 secret"):
            call_command("rotate_secrets", stdout=io.StringIO(), stderr=err)
        with pytest.raises(SecretError) as caught:
            job_secrets_reveal(job_id=job.pk)
    assert "cannot decrypt ops/j: LOST_TOKEN" in err.getvalue()
    assert "LOST_TOKEN" in caught.value.errors
    assert "gone" not in str(caught.value)


@pytest.mark.django_db
def test_it_rotates_notification_channels_secrets_with_the_job_secrets() -> None:
    with override_settings(KARMCHARI_SECRETS_KEYS=[KEY_1]):
        signed = NotificationChannel.objects.create(
            name="hook", kind="webhook", target="https://x.test/h", secret=encrypt("k")
        )
    NotificationChannel.objects.create(
        name="plain", kind="webhook", target="https://x.test/p"
    )

    with override_settings(KARMCHARI_SECRETS_KEYS=[KEY_2, KEY_1]):
        out = io.StringIO()
        call_command("rotate_secrets", stdout=out)

    assert "Re-encrypted 1 secret(s)" in out.getvalue()
    token = NotificationChannel.objects.get(pk=signed.pk).secret
    assert Fernet(KEY_2.encode()).decrypt(token.encode()) == b"k"
    assert NotificationChannel.objects.get(name="plain").secret == ""
    with override_settings(KARMCHARI_SECRETS_KEYS=[KEY_2]):
        rotated = NotificationChannel.objects.get(pk=signed.pk)
        assert channel_signing_key(channel=rotated) == "k"


@pytest.mark.django_db
def test_it_names_a_channel_secret_no_key_can_decrypt_on_rotation() -> None:
    with override_settings(KARMCHARI_SECRETS_KEYS=[KEY_1]):
        token = encrypt("lost")
    NotificationChannel.objects.create(
        name="hook", kind="webhook", target="https://x.test/h", secret=token
    )
    err = io.StringIO()

    with override_settings(KARMCHARI_SECRETS_KEYS=[KEY_2]):
        with pytest.raises(CommandError, match="1 secret"):
            call_command("rotate_secrets", stdout=io.StringIO(), stderr=err)
        with pytest.raises(SecretError) as caught:
            channel_signing_key(channel=NotificationChannel.objects.get())

    assert "cannot decrypt notification channel hook" in err.getvalue()
    assert NotificationChannel.objects.get().secret == token  # left as it was
    assert "'hook' cannot be decrypted" in caught.value.errors["secret"]


@pytest.mark.django_db
def test_it_does_not_overwrite_a_secret_set_while_rotating(
    make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator sets a new value between rotation's read and its write: the new
    value (already under the first key) stays."""
    job = make_job()
    channel = NotificationChannel.objects.create(
        name="hook", kind="webhook", target="https://x.test/h", secret=encrypt("old")
    )
    job_secrets_set(job=job, secrets={"TOKEN": "old"})
    real_rotate = MultiFernet.rotate

    def set_meanwhile(self: MultiFernet, msg: bytes) -> bytes:
        job_secrets_set(job=job, secrets={"TOKEN": "new"})
        NotificationChannel.objects.filter(pk=channel.pk).update(secret=encrypt("new"))
        return real_rotate(self, msg)

    monkeypatch.setattr(MultiFernet, "rotate", set_meanwhile)
    with override_settings(KARMCHARI_SECRETS_KEYS=[KEY_1]):
        rotated, unreadable = secrets_rotate()
        assert job_secrets_reveal(job_id=job.pk) == {"TOKEN": "new"}
        stored = NotificationChannel.objects.get()
        assert channel_signing_key(channel=stored) == "new"

    assert (rotated, unreadable) == (0, [])


def test_it_warns_in_the_deploy_checks_while_secrets_use_the_derived_key() -> None:
    with override_settings(KARMCHARI_SECRETS_KEYS=[]):
        assert [m.id for m in check_secrets_keys(None)] == ["karmchari.W001"]
    with override_settings(KARMCHARI_SECRETS_KEYS=[KEY_1]):
        assert check_secrets_keys(None) == []


# --- Writing: the split, the services ------------------------------------------------


@pytest.mark.django_db
def test_it_splits_secret_looking_env_out_of_a_shell_spec(
    make_app: Callable[..., App],
) -> None:
    job = services.job_create(
        app=make_app(),
        name="backup",
        spec={"command": "x", "env": {"DB_PASSWORD": "pw-1", "MODE": "fast"}},
    )
    job.refresh_from_db()
    assert job.spec == {"command": "x", "env": {"MODE": "fast"}}
    assert job_secrets_reveal(job_id=job.pk) == {"DB_PASSWORD": "pw-1"}

    services.job_update(job=job, spec={"command": "y", "env": {"AUTH_KEY": "k-2"}})
    job.refresh_from_db()
    assert job.spec == {"command": "y"}
    assert job_secrets_reveal(job_id=job.pk) == {
        "DB_PASSWORD": "pw-1",
        "AUTH_KEY": "k-2",
    }


def test_it_splits_http_headers_into_placeholders() -> None:
    spec = {
        "url": "https://example.com/",
        "headers": {
            "X-Api-Key": "k-1",
            "Authorization": "Bearer ${TOKEN}",  # already a placeholder: stays
            "Accept": "text/plain",
        },
    }
    cleaned, secrets = spec_split_secrets(kind="http", spec=spec)
    assert cleaned["headers"] == {
        "X-Api-Key": "${X_API_KEY}",
        "Authorization": "Bearer ${TOKEN}",
        "Accept": "text/plain",
    }
    assert secrets == {"X_API_KEY": "k-1"}
    assert spec["headers"]["X-Api-Key"] == "k-1"  # the input is left alone
    assert header_secret_name("x-auth.token") == "X_AUTH_TOKEN"
    assert header_secret_name("1-Token") == "_1_TOKEN"


@pytest.mark.django_db
def test_it_refuses_a_mask_with_nothing_stored_and_writes_nothing(
    make_job: Callable[..., Job],
) -> None:
    job = make_job()
    with pytest.raises(SecretError) as caught:
        job_secrets_set(job=job, secrets={"A_TOKEN": "a-1", "B_TOKEN": SECRET_MASK})
    assert list(caught.value.errors) == ["B_TOKEN"]
    assert not JobSecret.objects.exists()


# --- Masking -------------------------------------------------------------------------


def test_it_masks_values_in_text_longest_first_and_ignores_short_ones() -> None:
    values = ["abcd", "abcdefgh", "xyz"]
    assert mask_text("abcdefgh abcd xyz", values) == "*** *** xyz"


def test_it_masks_a_value_as_an_http_client_percent_encodes_it() -> None:
    value = "correct horse bätterý/+"
    text = (
        "url: /r?password=correct%20horse%20b%C3%A4tter%C3%BD/+ and "
        "correct+horse+b%C3%A4tter%C3%BD%2F%2B in a form"
    )
    assert mask_text(text, [value]) == "url: /r?password=*** and *** in a form"
    out: list[bytes] = []
    masker = OutputMasker([value], out.append)
    masker.write(b"GET /r?password=correct%20horse%20b%C3%A4")
    masker.write(b"tter%C3%BD/+ done")
    masker.flush()
    assert b"".join(out) == b"GET /r?password=*** done"


@pytest.mark.django_db
def test_it_masks_a_secret_in_an_http_job_s_url_in_its_failure_reason(
    make_app: Callable[..., App],
) -> None:
    job = services.job_create(
        app=make_app(),
        name="leaky",
        kind=Job.Kind.HTTP,
        # Port 1: connection refused, so the reason quotes the request's URL.
        spec={"url": "http://127.0.0.1:1/report?password=${PASSWORD}"},
        secrets={"PASSWORD": "correct horse bätterý"},
    )
    execution = Execution.objects.create(job=job)

    services.execution_run(execution_id=execution.pk, worker="w")

    execution.refresh_from_db()
    assert execution.status == Execution.Status.FAILED
    assert "password=***" in execution.reason, execution.reason
    assert "horse" not in execution.reason


def test_it_masks_a_value_split_across_chunks_without_holding_other_output() -> None:
    out: list[bytes] = []
    masker = OutputMasker(["hunter2"], out.append)
    masker.write(b"line one\n")
    assert out == [b"line one\n"]  # nothing that could start a secret: sent at once
    masker.write(b"password: hun")
    masker.write(b"ter2 and hu")
    masker.write(b"mbug\nhunt")
    masker.flush()
    assert b"".join(out) == b"line one\npassword: *** and humbug\nhunt"


# --- Running: secrets reach the run, never its records --------------------------------


def run_execution(job: Job) -> Execution:
    """Run a new execution of `job` in this process, as a worker would."""
    execution = Execution.objects.create(job=job)
    # Ids repeat between tests; a stream left in Redis by another test would mix in.
    get_redis_connection("default").delete(logs.log_key(execution.pk))
    services.execution_run(execution_id=execution.pk, worker="w")
    execution.refresh_from_db()
    return execution


@pytest.mark.django_db
def test_it_shows_a_shell_run_its_secret_and_stores_its_output_masked(
    make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    job = services.job_create(
        app=make_app(),
        name="uses-secret",
        spec={
            "command": 'test "$API_TOKEN" = "s3cr3t-value" || exit 9; '
            'echo "token=$API_TOKEN mode=$MODE"; echo "$API_TOKEN" >&2',
            "env": {"MODE": "fast", "API_TOKEN": "from-spec"},
        },
        secrets={"API_TOKEN": "s3cr3t-value"},  # the explicit value wins
    )
    with caplog.at_level(logging.DEBUG):
        execution = run_execution(job)
    assert execution.status == Execution.Status.SUCCEEDED, execution.reason
    assert execution.output == "token=*** mode=fast\n"
    assert execution.error == "***\n"
    chunks = b"".join(
        ExecutionLogChunk.objects.filter(execution=execution).values_list(
            "data", flat=True
        )
    )
    assert b"s3cr3t-value" not in chunks and b"token=***" in chunks
    live = logs.log_read(execution=execution, offset=0).text
    assert "s3cr3t-value" not in live and "token=***" in live
    assert "s3cr3t-value" not in caplog.text


@pytest.mark.django_db
def test_it_logs_and_records_a_crashing_runner_s_error_masked(
    make_job: Callable[..., Job], caplog: pytest.LogCaptureFixture
) -> None:
    job = make_job()
    job_secrets_set(job=job, secrets={"DB_PASSWORD": "crash-secret"})
    execution = Execution.objects.create(job=job)
    boom = RuntimeError("could not connect with crash-secret")
    with (
        mock.patch.object(ShellRunner, "run", side_effect=boom),
        caplog.at_level(logging.ERROR),
    ):
        services.execution_run(execution_id=execution.pk, worker="w")
    execution.refresh_from_db()
    assert execution.reason == "Runner error: could not connect with ***"
    assert "runner crashed" in caplog.text
    assert "crash-secret" not in caplog.text


@pytest.mark.django_db
def test_it_fails_a_run_whose_secrets_cannot_be_decrypted_saying_so(
    make_job: Callable[..., Job],
) -> None:
    job = make_job()
    with override_settings(KARMCHARI_SECRETS_KEYS=[KEY_1]):
        job_secrets_set(job=job, secrets={"DB_PASSWORD": "x"})
    execution = run_execution(job)
    assert execution.status == Execution.Status.FAILED
    assert execution.reason.startswith("Secrets unreadable: DB_PASSWORD: cannot be")
    assert execution.pid is None  # never started


class Echo(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.seen.append({"path": self.path, "key": self.headers["X-Api-Key"]})
        answer = json.dumps({"key": self.headers["X-Api-Key"], "body": body}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.django_db
def test_it_fills_an_http_run_s_placeholders_and_masks_what_comes_back(
    make_app: Callable[..., App], echo_server: str
) -> None:
    Echo.seen.clear()
    job = services.job_create(
        app=make_app(),
        name="hook",
        kind=Job.Kind.HTTP,
        spec={
            "method": "POST",
            "url": echo_server + "/hook/${ROUTE}",
            "headers": {"X-Api-Key": "the-api-key"},  # split into ${X_API_KEY}
            "body": "route=${ROUTE}",
        },
        secrets={"ROUTE": "r0ute-42"},
    )
    execution = run_execution(job)
    assert Echo.seen == [{"path": "/hook/r0ute-42", "key": "the-api-key"}]
    assert execution.status == Execution.Status.SUCCEEDED, execution.reason
    assert json.loads(execution.output.split("\n\n", 1)[1]) == {
        "key": "***",
        "body": "route=***",
    }
    live = logs.log_read(execution=execution, offset=0).text
    assert "the-api-key" not in live and "r0ute-42" not in live


@pytest.mark.django_db
def test_it_fails_an_http_run_with_an_unknown_placeholder_clearly(
    make_app: Callable[..., App],
) -> None:
    job = services.job_create(
        app=make_app(),
        name="hook",
        kind=Job.Kind.HTTP,
        spec={"url": "http://127.0.0.1:9/?token=${MISSING_TOKEN}"},
    )
    execution = run_execution(job)
    assert execution.status == Execution.Status.FAILED
    assert execution.reason == (
        "Not sent: url: ${MISSING_TOKEN} names no secret of this job."
    )


# --- Migration 0013 ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_migrates_stored_secrets_out_of_specs_and_back() -> None:
    before = [("jobs", "0012_app_access")]
    after = [("jobs", "0013_job_secrets")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    app = old.get_model("jobs", "App").objects.create(name="legacy")
    OldJob = old.get_model("jobs", "Job")
    shell = OldJob.objects.create(
        app=app,
        name="shell",
        kind="shell",
        spec={"command": "x", "env": {"DB_PASSWORD": "pw-old", "MODE": "m"}},
    )
    http = OldJob.objects.create(
        app=app,
        name="http",
        kind="http",
        spec={
            "url": "https://example.com/${not-a-name}/${LITERAL}",
            "headers": {"X-Api-Key": "key-old", "Accept": "a"},
            "body": {"template": "${LITERAL}"},
        },
    )
    try:
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        new = executor.loader.project_state(after).apps
        NewJob = new.get_model("jobs", "Job")
        assert NewJob.objects.get(pk=shell.pk).spec == {
            "command": "x",
            "env": {"MODE": "m"},
        }
        assert job_secrets_reveal(job_id=shell.pk) == {"DB_PASSWORD": "pw-old"}
        migrated = NewJob.objects.get(pk=http.pk).spec
        assert migrated == {
            # What was literal before stays literal: escaped.
            "url": "https://example.com/${not-a-name}/$${LITERAL}",
            "headers": {"X-Api-Key": "${X_API_KEY}", "Accept": "a"},
            "body": {"template": "$${LITERAL}"},
        }
        assert job_secrets_reveal(job_id=http.pk) == {"X_API_KEY": "key-old"}

        executor = MigrationExecutor(connection)
        executor.migrate(before)
        assert OldJob.objects.get(pk=shell.pk).spec == shell.spec
        assert OldJob.objects.get(pk=http.pk).spec == http.spec
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())


SECRET = "s3cr3t-v4lue-0042"


@pytest.fixture(autouse=True)
def no_broker() -> Iterator[mock.MagicMock]:
    with mock.patch("jobs.tasks.run_execution.apply_async") as apply_async:
        yield apply_async


def test_it_masks_a_secret_in_what_an_external_run_reports(
    api: APIClient,
    make_job: Callable[..., Job],
    django_capture_on_commit_callbacks: Callable,
) -> None:
    """docs/api.md: every occurrence of a secret value in a run's output, error,
    reason and live log is replaced by ***. A report's text is stored as sent."""
    job = make_job(kind=Job.Kind.EXTERNAL, spec={})
    services.job_update(job=job, secrets={"API_KEY": SECRET})
    run = api.post(f"/api/jobs/{job.pk}/run/").json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        api.post(
            f"/api/executions/{run}/report/",
            {"status": "running", "output": f"using {SECRET}\n"},
        )
    live = api.get(f"/api/executions/{run}/log/").json()["text"]
    with django_capture_on_commit_callbacks(execute=True):
        api.post(
            f"/api/executions/{run}/report/",
            {
                "status": "failed",
                "error": f"bad key {SECRET}",
                "reason": f"refused {SECRET}",
            },
        )
    detail = api.get(f"/api/executions/{run}/").json()
    assert SECRET not in live
    assert SECRET not in detail["output"]
    assert SECRET not in detail["error"]
    assert SECRET not in detail["reason"]
