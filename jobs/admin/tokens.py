"""The API tokens room."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from jobs import access, tokens
from jobs.admin.base import LockingAdmin
from jobs.models import ApiToken


def may_make_token_for(creator: Any, user: Any) -> bool:
    """Whether `creator` may make an API token for `user`: a token is `user`'s
    rights in a string, so no one may mint rights they do not hold themselves. With
    per-app access, the apps a user sees are rights too."""
    if creator.is_superuser or creator.pk == user.pk:
        return True
    if user.is_superuser or not user.is_active:
        return False
    if not set(user.get_all_permissions()) <= set(creator.get_all_permissions()):
        return False
    return not (
        access.is_restricted(creator)
        and access.apps_for(user).exclude(pk__in=access.apps_for(creator)).exists()
    )


@admin.register(ApiToken)
class ApiTokenAdmin(LockingAdmin[ApiToken]):
    """Tokens are made here with a name; the key is shown once, in a message."""

    list_display = ["name", "user", "prefix", "created", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    list_select_related = ["user"]
    search_fields = ["name", "prefix", "user__username"]
    raw_id_fields = ["user"]
    fields = ["user", "name", "prefix", "created", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        creator = request.user

        def clean_user(self: forms.ModelForm[ApiToken]) -> Any:
            user = self.cleaned_data["user"]
            if not may_make_token_for(creator, user):
                raise forms.ValidationError(
                    "A token acts with all of its user's rights: only a superuser "
                    "may make one for a user who holds rights (permissions, or apps "
                    "to see) you do not."
                )
            return user

        form.clean_user = clean_user  # type: ignore[attr-defined]
        return form

    def get_readonly_fields(
        self, request: HttpRequest, obj: ApiToken | None = None
    ) -> list[str]:
        base = list(self.readonly_fields)
        return base if obj is None else ["user", "name", *base]

    def save_model(
        self, request: HttpRequest, obj: ApiToken, form: Any, change: bool
    ) -> None:
        if change:
            return  # nothing of a token is editable once made
        token, key = tokens.token_create(user=obj.user, name=obj.name)
        obj.pk = token.pk
        self.message_user(
            request,
            f"Token {token.name!r} made. Its key, shown only now: {key}",
            messages.WARNING,
        )

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        for token in queryset:
            tokens.token_revoke(token=token)
        self.message_user(request, f"Revoked {len(queryset)} token(s).")
