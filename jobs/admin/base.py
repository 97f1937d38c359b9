"""What the rooms of the console share: formatting, links and per-app access."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from django.contrib import admin, messages
from django.contrib.admin.widgets import ForeignKeyRawIdWidget
from django.core.exceptions import ValidationError
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.timesince import timeuntil
from django_stubs_ext import StrOrPromise

from jobs import access, services


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    local = timezone.localtime(value)
    if value > timezone.now():
        return f"{local:%Y-%m-%d %H:%M:%S} (in {timeuntil(value)})"
    return f"{local:%Y-%m-%d %H:%M:%S}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(int(value), 60)
    hours, minutes = divmod(minutes, 60)
    return (
        f"{hours}h {minutes:02d}m {seconds:02d}s"
        if hours
        else f"{minutes}m {seconds:02d}s"
    )


def _change_link(name: str, pk: int, text: str) -> SafeString:
    return format_html('<a href="{}">{}</a>', reverse(f"admin:{name}", args=[pk]), text)


M = TypeVar("M", bound=Model)


class AppScopedAdmin(admin.ModelAdmin[M]):
    """Per-app access in the console: the changelist, change pages, actions,
    autocomplete (which reads this queryset) and the choices of app and job fields
    show only what the user may see. Other rows answer as missing."""

    # The path from the model to its app, as access.restrict() takes it.
    app_path: str

    def app_condition(self, request: HttpRequest) -> Q:
        return access.condition(request.user, self.app_path)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # Deleted by someone else between this page's load and its save: the
        # services refuse to bring it back (their save would insert it again). Say
        # so, as Django does for a page opened after the delete.
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except services.Gone as exc:
            self.message_user(
                request, f"{exc} Your changes were not saved.", messages.WARNING
            )
            opts = self.opts
            return HttpResponseRedirect(
                reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
            )

    def get_queryset(self, request: HttpRequest) -> QuerySet[M]:
        return super().get_queryset(request).filter(self.app_condition(request))

    def formfield_for_foreignkey(
        self, db_field: Any, request: HttpRequest, **kwargs: Any
    ) -> Any:
        _offer_visible(db_field, request, kwargs)
        if db_field.name in self.raw_id_fields and "queryset" in kwargs:
            kwargs.setdefault(
                "widget",
                VisibleRawIdWidget(
                    db_field.remote_field, self.admin_site, visible=kwargs["queryset"]
                ),
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(
        self, db_field: Any, request: HttpRequest, **kwargs: Any
    ) -> Any:
        _offer_visible(db_field, request, kwargs)
        return super().formfield_for_manytomany(db_field, request, **kwargs)


class VisibleRawIdWidget(ForeignKeyRawIdWidget):
    """A raw-id field that names only what the user may see: Django's looks the id
    up unrestricted, so `?job=<id>` on an add page would name a hidden job."""

    def __init__(self, *args: Any, visible: QuerySet[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.visible = visible

    def label_and_url_for_value(self, value: Any) -> tuple[str, str]:
        key = self.rel.get_related_field().name
        try:
            if not self.visible.filter(**{key: value}).exists():
                return "", ""
        except (ValueError, TypeError, ValidationError):
            return "", ""
        label, url = super().label_and_url_for_value(value)
        return str(label), str(url)


def _offer_visible(db_field: Any, request: HttpRequest, kwargs: dict[str, Any]) -> None:
    """A related field's choices narrowed to the apps the user may see."""
    if "queryset" not in kwargs:
        choices = access.visible(db_field.related_model, request.user)
        if choices is not None:
            kwargs["queryset"] = choices


class AppListFilter(admin.RelatedFieldListFilter):
    """The app filter, offering only the apps the user may see."""

    def field_choices(
        self, field: Any, request: HttpRequest, model_admin: Any
    ) -> list[tuple[str, StrOrPromise]]:
        return [(str(app.pk), str(app)) for app in access.apps_for(request.user)]
