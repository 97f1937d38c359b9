"""The `secrets` field of /api/jobs/: write-only values, masked reads."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from audit.models import AuditEntry
from jobs import services
from jobs.models import App, Job, JobSecret
from jobs.runners import SECRET_MASK
from jobs.secrets import job_secrets_reveal

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(make_app: Callable[..., App]) -> Job:
    return services.job_create(
        app=make_app("ops"),
        name="backup",
        spec={"command": "backup.sh"},
        secrets={"DB_PASSWORD": "hunter2-db", "API_TOKEN": "tok-value"},
    )


def test_it_creates_a_job_with_secrets_and_never_answers_a_value(
    api: APIClient, make_app: Callable[..., App]
) -> None:
    make_app("ops")
    response = api.post(
        "/api/jobs/",
        {
            "app": "ops",
            "name": "backup",
            "spec": {"command": "backup.sh"},
            "secrets": {"DB_PASSWORD": "hunter2-db"},
        },
    )
    assert response.status_code == 201, response.json()
    assert response.json()["secrets"] == {"DB_PASSWORD": SECRET_MASK}
    assert "hunter2-db" not in response.content.decode()
    job = Job.objects.get(pk=response.json()["id"])
    assert job_secrets_reveal(job_id=job.pk) == {"DB_PASSWORD": "hunter2-db"}
    for url in (f"/api/jobs/{job.pk}/", "/api/jobs/"):
        body = api.get(url).content.decode()
        assert "DB_PASSWORD" in body
        assert "hunter2-db" not in body


def test_it_moves_secret_looking_env_and_headers_out_of_the_spec(
    api: APIClient, make_app: Callable[..., App]
) -> None:
    make_app("ops")
    shell = api.post(
        "/api/jobs/",
        {
            "app": "ops",
            "name": "old-client",
            "spec": {"command": "x", "env": {"DB_PASSWORD": "pw-1", "MODE": "fast"}},
        },
    ).json()
    assert shell["spec"] == {"command": "x", "env": {"MODE": "fast"}}
    assert shell["secrets"] == {"DB_PASSWORD": SECRET_MASK}
    assert Job.objects.get(pk=shell["id"]).spec == shell["spec"]

    http = api.post(
        "/api/jobs/",
        {
            "app": "ops",
            "name": "hook",
            "kind": "http",
            "spec": {
                "url": "https://example.com/",
                "headers": {"X-Api-Key": "key-1", "Accept": "text/plain"},
            },
        },
    ).json()
    assert http["spec"]["headers"] == {
        "X-Api-Key": "${X_API_KEY}",
        "Accept": "text/plain",
    }
    assert job_secrets_reveal(job_id=http["id"]) == {"X_API_KEY": "key-1"}


def test_it_keeps_the_stored_values_when_a_client_sends_back_what_it_read(
    api: APIClient, job: Job
) -> None:
    read = api.get(f"/api/jobs/{job.pk}/").json()
    read["description"] = "edited"
    response = api.put(f"/api/jobs/{job.pk}/", read)
    assert response.status_code == 200, response.json()
    assert response.json()["secrets"] == {
        "API_TOKEN": SECRET_MASK,
        "DB_PASSWORD": SECRET_MASK,
    }
    assert job_secrets_reveal(job_id=job.pk) == {
        "DB_PASSWORD": "hunter2-db",
        "API_TOKEN": "tok-value",
    }


def test_it_merges_on_patch_and_deletes_a_null(api: APIClient, job: Job) -> None:
    response = api.patch(
        f"/api/jobs/{job.pk}/",
        {"secrets": {"DB_PASSWORD": "new-db-pw", "API_TOKEN": None, "EXTRA": "x"}},
    )
    assert response.status_code == 200, response.json()
    assert response.json()["secrets"] == {
        "DB_PASSWORD": SECRET_MASK,
        "EXTRA": SECRET_MASK,
    }
    assert job_secrets_reveal(job_id=job.pk) == {
        "DB_PASSWORD": "new-db-pw",
        "EXTRA": "x",
    }


def test_it_replaces_the_set_on_put(api: APIClient, job: Job) -> None:
    read = api.get(f"/api/jobs/{job.pk}/").json()
    read["secrets"] = {"DB_PASSWORD": SECRET_MASK, "NEW_ONE": "n3w"}
    response = api.put(f"/api/jobs/{job.pk}/", read)
    assert response.status_code == 200, response.json()
    assert job_secrets_reveal(job_id=job.pk) == {
        "DB_PASSWORD": "hunter2-db",
        "NEW_ONE": "n3w",
    }


def test_it_leaves_the_secrets_alone_on_a_put_without_them(
    api: APIClient, job: Job
) -> None:
    read = api.get(f"/api/jobs/{job.pk}/").json()
    del read["secrets"]
    assert api.put(f"/api/jobs/{job.pk}/", read).status_code == 200
    assert set(job_secrets_reveal(job_id=job.pk)) == {"DB_PASSWORD", "API_TOKEN"}


@pytest.mark.parametrize(
    ("secrets", "name", "message"),
    [
        ({"1BAD": "x"}, "1BAD", "Not a valid name"),
        ({"BAD-NAME": "x"}, "BAD-NAME", "Not a valid name"),
        ({"N" * 256: "x"}, "N" * 256, "at most 255"),
        ({"GOOD": 5}, "GOOD", "Must be a string"),
        ({"GOOD": "a\x00b"}, "GOOD", "NUL"),
        ({"GOOD": "x" * 65537}, "GOOD", "Longer than 65536 bytes"),
        ({"NOT_STORED": SECRET_MASK}, "NOT_STORED", "no value is stored"),
    ],
)
def test_it_refuses_bad_secrets_naming_the_field(
    api: APIClient, job: Job, secrets: dict, name: str, message: str
) -> None:
    response = api.patch(f"/api/jobs/{job.pk}/", {"secrets": secrets}, format="json")
    assert response.status_code == 400
    errors = response.json()["secrets"]
    assert message in str(errors[name])
    assert set(job_secrets_reveal(job_id=job.pk)) == {"DB_PASSWORD", "API_TOKEN"}


def test_it_refuses_secrets_that_are_not_an_object(api: APIClient, job: Job) -> None:
    response = api.patch(f"/api/jobs/{job.pk}/", {"secrets": ["x"]})
    assert response.status_code == 400
    assert "secrets" in response.json()


def test_it_refuses_a_mask_in_the_spec_with_nothing_stored(
    api: APIClient, make_app: Callable[..., App]
) -> None:
    make_app("ops")
    response = api.post(
        "/api/jobs/",
        {
            "app": "ops",
            "name": "masked",
            "spec": {"command": "x", "env": {"NEW_TOKEN": SECRET_MASK}},
        },
    )
    assert response.status_code == 400
    assert "no value is stored" in str(response.json()["secrets"]["NEW_TOKEN"])
    assert not Job.objects.filter(name="masked").exists()


def test_it_keeps_no_secret_value_in_the_audit_log(api: APIClient, job: Job) -> None:
    api.patch(
        f"/api/jobs/{job.pk}/?x=1",
        {
            "secrets": {"DB_PASSWORD": "audited-pw"},
            "spec": {"command": "x", "env": {"MY_TOKEN": "audited-token"}},
        },
    )
    entries = list(AuditEntry.objects.values())
    assert entries, "the write was not audited"
    for value in ("audited-pw", "audited-token"):
        assert value not in str(entries)
    # Stored encrypted: not even the database holds the plain value.
    stored = " ".join(JobSecret.objects.values_list("value", flat=True))
    assert "audited-pw" not in stored and "audited-token" not in stored


def test_it_warns_of_a_placeholder_naming_no_secret(
    api: APIClient, make_app: Callable[..., App]
) -> None:
    make_app("ops")
    body = api.post(
        "/api/jobs/",
        {
            "app": "ops",
            "name": "hook",
            "kind": "http",
            "spec": {"url": "https://example.com/?t=${TOKEN}&u=${USER_ID}"},
            "secrets": {"TOKEN": "t"},
        },
    ).json()
    assert (
        "${USER_ID} names no secret of this job: its runs will fail."
        in (body["warnings"])
    )
    assert not any("TOKEN}" in warning for warning in body["warnings"])
