"""Notifications set up through the API reach a webhook from a real worker process:
the failure of a run, signed with the channel's secret (stored encrypted, decrypted
by the worker), and a channel's test message."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
import requests
from django.contrib.auth.models import User

from tests.integration.conftest import Processes
from tests.receiver import Receiver
from tests.tokens import make_token
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def api(live_server, admin_user: User) -> requests.Session:  # type: ignore[no-untyped-def]
    session = requests.Session()
    session.headers["Authorization"] = f"Token {make_token(admin_user).key}"
    session.base_url = live_server.url + "/api"  # type: ignore[attr-defined]
    return session


def post(api: requests.Session, path: str, body: object = None) -> dict:
    response = api.post(f"{api.base_url}{path}", json=body)  # type: ignore[attr-defined]
    assert response.status_code in (201, 202), response.text
    return response.json()  # type: ignore[no-any-return]


def test_it_signs_and_sends_a_failure_and_a_test_message_from_a_worker(
    api: requests.Session, processes: Processes, queue: str, receiver: Receiver
) -> None:
    # Runs go to the test's own queue; deliveries to Celery's default one.
    processes.worker(f"{queue},celery")
    post(api, "/apps/", {"name": "it"})
    job = post(
        api,
        "/jobs/",
        {"app": "it", "name": "bad", "queue": queue, "spec": {"command": "exit 3"}},
    )
    channel = post(
        api,
        "/notification-channels/",
        {"name": "hook", "kind": "webhook", "target": receiver.url, "secret": "s3"},
    )
    assert channel["has_secret"] is True and "secret" not in channel
    post(
        api,
        "/notification-rules/",
        {"channel": channel["id"], "job": job["id"], "events": ["failure"]},
    )

    run = post(api, f"/jobs/{job['id']}/run/")
    wait_for(lambda: receiver.requests, timeout=60)
    post(api, f"/notification-channels/{channel['id']}/test/")
    wait_for(lambda: len(receiver.requests) == 2, timeout=60)

    for request in receiver.requests:
        expected = hmac.new(b"s3", request["body"], hashlib.sha256).hexdigest()
        assert request["headers"]["X-Karmchari-Signature"] == f"sha256={expected}"
    failure, test = (json.loads(r["body"]) for r in receiver.requests)
    assert (failure["event"], failure["execution"]["id"]) == ("failure", run["id"])
    assert failure["execution"]["exit_code"] == 3
    assert test["event"] == "test"

    log = api.get(
        f"{api.base_url}/notification-deliveries/",  # type: ignore[attr-defined]
        params={"channel": channel["id"]},
    ).json()["results"]
    assert sorted((d["event"], d["status"]) for d in log) == [
        ("failure", "sent"),
        ("test", "sent"),
    ]
