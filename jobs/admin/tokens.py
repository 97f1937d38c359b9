"""The API tokens room."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from jobs import tokens
from jobs.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin[ApiToken]):
    """Tokens are made here with a name; the key is shown once, in a message."""

    list_display = ["name", "user", "prefix", "created", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    list_select_related = ["user"]
    search_fields = ["name", "prefix", "user__username"]
    raw_id_fields = ["user"]
    fields = ["user", "name", "prefix", "created", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created", "last_used_at", "revoked_at"]
    actions = ["revoke"]

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
