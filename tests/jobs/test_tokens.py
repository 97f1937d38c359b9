from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from jobs import tokens
from jobs.admin.tokens import ApiTokenAdmin
from jobs.models import ApiToken

pytestmark = pytest.mark.django_db


def test_it_stores_only_a_hash_of_the_key(admin_user: User) -> None:
    token, key = tokens.token_create(user=admin_user, name="ci")
    assert key.startswith("kc_") and len(key) > 40
    stored = ApiToken.objects.get(pk=token.pk)
    assert key not in (stored.key_hash, stored.prefix)
    assert stored.prefix == key[:10]
    assert tokens.token_authenticate(key=key) == stored


def test_it_leaves_a_token_deleted_meanwhile_deleted_when_revoking_it(
    admin_user: User,
) -> None:
    token, _ = tokens.token_create(user=admin_user, name="ci")
    ApiToken.objects.filter(pk=token.pk).delete()  # by someone else, meanwhile
    assert tokens.token_revoke(token=token).revoked_at is not None
    assert not ApiToken.objects.exists()


def test_it_no_longer_authenticates_a_revoked_token(
    anon: APIClient, admin_user: User
) -> None:
    token, key = tokens.token_create(user=admin_user, name="ci")
    anon.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert anon.get("/api/jobs/").status_code == 200
    tokens.token_revoke(token=token)
    response = anon.get("/api/jobs/")
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid or revoked token."


def test_it_records_the_last_use_at_most_once_a_minute(
    anon: APIClient, admin_user: User
) -> None:
    token, key = tokens.token_create(user=admin_user, name="ci")
    anon.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        anon.get("/api/jobs/")
        first = ApiToken.objects.get(pk=token.pk).last_used_at
    with time_machine.travel(start + timedelta(seconds=30), tick=False):
        anon.get("/api/jobs/")
        assert ApiToken.objects.get(pk=token.pk).last_used_at == first
    with time_machine.travel(start + timedelta(minutes=2), tick=False):
        anon.get("/api/jobs/")
        assert ApiToken.objects.get(pk=token.pk).last_used_at > first


def test_it_makes_a_new_named_token_at_the_token_endpoint(
    anon: APIClient, admin_user: User
) -> None:
    response = anon.post(
        "/api/token/", {"username": "admin", "password": "password", "name": "laptop"}
    )
    assert response.status_code == 200
    assert response.json()["name"] == "laptop"
    assert ApiToken.objects.get().name == "laptop"


def test_it_prints_a_working_key_from_the_create_token_command(
    admin_user: User, capsys: object
) -> None:
    call_command("create_token", "admin", "--name", "deploy")
    key = capsys.readouterr().out.strip()  # type: ignore[attr-defined]
    assert tokens.token_authenticate(key=key) is not None


def test_it_shows_the_key_once_in_the_admin_and_revokes_it(
    admin_client: Client, admin_user: User
) -> None:
    response = admin_client.post(
        "/admin/jobs/apitoken/add/",
        {"user": admin_user.pk, "name": "grafana"},
        follow=True,
    )
    assert b"Its key, shown only now: kc_" in response.content
    token = ApiToken.objects.get(name="grafana")
    admin_client.post(
        "/admin/jobs/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}
    )
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_it_makes_no_token_in_the_admin_with_rights_its_maker_lacks(
    make_user: Callable[..., User], admin_user: User
) -> None:
    staff = make_user("tokenadmin", groups=["admin"], is_staff=True)
    viewer = make_user("reader", groups=["viewer"])
    client = Client()
    client.force_login(staff)
    refused = client.post(
        "/admin/jobs/apitoken/add/", {"user": admin_user.pk, "name": "mine now"}
    )
    assert refused.status_code == 200
    assert "only a superuser" in refused.content.decode()
    assert not ApiToken.objects.filter(user=admin_user).exists()
    # A service account with fewer rights than its maker: fine.
    made = client.post("/admin/jobs/apitoken/add/", {"user": viewer.pk, "name": "ci"})
    assert made.status_code == 302
    assert ApiToken.objects.filter(user=viewer).exists()


def test_it_says_a_token_deleted_while_its_page_was_saved_is_gone(
    admin_client: Client, admin_user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing of a token is editable, but its page has a Save button: it answered
    "changed successfully" (and logged a change) for a token deleted meanwhile."""
    token, _ = tokens.token_create(user=admin_user, name="grafana")
    real_save_form = ApiTokenAdmin.save_form

    def deleted_meanwhile(self: Any, *args: Any, **kwargs: Any) -> Any:
        ApiToken.objects.filter(pk=token.pk).delete()
        return real_save_form(self, *args, **kwargs)

    monkeypatch.setattr(ApiTokenAdmin, "save_form", deleted_meanwhile)
    response = admin_client.post(
        f"/admin/jobs/apitoken/{token.pk}/change/", {}, follow=True
    )

    assert response.redirect_chain[-1][0] == "/admin/jobs/apitoken/"
    assert [str(m) for m in response.context["messages"]] == [
        f"API token {str(token)!r} was deleted by someone else while you were "
        "editing it. Your changes were not saved."
    ]
