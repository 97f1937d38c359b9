"""What the rooms of the console share: formatting, links and per-app access."""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime
from typing import Any, TypeVar

from django.contrib import admin, messages
from django.contrib.admin.widgets import ForeignKeyRawIdWidget
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db.models import Model, Q, QuerySet
from django.forms.formsets import DELETION_FIELD_NAME
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import capfirst
from django.utils.timesince import timeuntil
from django_stubs_ext import StrOrPromise

from jobs import access, services

logger = logging.getLogger(__name__)


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


def _deleted(obj: Model, pk: Any = None) -> str:
    """The message for a row gone meanwhile, named as the page named it (the form's
    values are on `obj`; `pk` when it never was read)."""
    try:
        text = str(obj)
    except (ObjectDoesNotExist, AttributeError, TypeError, ValueError):
        text = ""  # a half-filled form's row: a relation it names is missing
    label = repr(text) if text else f"#{obj.pk if pk is None else pk}"
    return (
        f"{capfirst(obj._meta.verbose_name)} {label} was deleted by someone else "
        "while you were editing it."
    )


def lock_stored(model: type[Model], pks: Collection[Any]) -> set[Any]:
    """Those of `pks` still stored, their rows locked until the transaction ends (a
    delete committed since the page read them has taken the others). A no-op lock
    on SQLite, whose IMMEDIATE transactions already keep other writers out."""
    found = model._base_manager.select_for_update().filter(pk__in=list(pks))
    return set(found.values_list("pk", flat=True))


class InlineGone(services.Gone):
    """A row of an inline deleted meanwhile: the page's own object stands."""


class LockingInlineFormSet(BaseInlineFormSet):  # type: ignore[type-arg]
    """An inline whose stored rows are locked while the page saves. Django saves a
    changed row under the id the page posted: gone since, the UPDATE finds nothing
    and it is INSERTed again (or, saved by a service by name, made anew); gone
    before the post, Django only says "Select a valid choice" on a hidden field.
    Either way the page says what happened and saves nothing (InlineGone)."""

    def clean(self) -> None:
        super().clean()
        # Rows ticked for deletion may be gone: that is what they asked for.
        kept = [
            form
            for form in self.initial_forms
            if not (self.can_delete and form.cleaned_data.get(DELETION_FIELD_NAME))
        ]
        for form in kept:
            if form.instance._state.adding:
                # Not among the rows read for the page: deleted before the post.
                posted = form.data.get(form.add_prefix(self.model._meta.pk.name))
                raise InlineGone(_deleted(form.instance, pk=posted))
        stored = lock_stored(self.model, [form.instance.pk for form in kept])
        for form in kept:
            if form.instance.pk not in stored:
                raise InlineGone(_deleted(form.instance))


class LockingAdmin(admin.ModelAdmin[M]):
    """A change page that never brings back a row deleted by someone else while it
    was open. Django saves it under the primary key read when the request began:
    with the row gone since, save() finds nothing to UPDATE and INSERTs it again
    (and its inlines and links with it). Here the row is locked before anything is
    written (in the page's transaction); gone, the page says so, saves nothing and
    shows the list. Inline rows: LockingInlineFormSet."""

    def save_form(self, request: HttpRequest, form: Any, change: bool) -> Any:
        # Called once the form is valid, before save_model and save_related.
        if change and not lock_stored(type(form.instance), [form.instance.pk]):
            raise services.Gone(_deleted(form.instance))
        return super().save_form(request, form, change)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # The page's transaction is rolled back by then: nothing of it was saved.
        # As Django does for a page opened after the delete, say so and move on:
        # to the list, or to this page afresh when only an inline row went.
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except InlineGone as exc:
            self._say_not_saved(request, exc)
            return HttpResponseRedirect(request.get_full_path())
        except services.Gone as exc:
            self._say_not_saved(request, exc)
            opts = self.opts
            return HttpResponseRedirect(
                reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
            )

    def _say_not_saved(self, request: HttpRequest, exc: services.Gone) -> None:
        logger.info("Change page of %s not saved: %s", self.opts.label, exc)
        self.message_user(
            request, f"{exc} Your changes were not saved.", messages.WARNING
        )


class AppScopedAdmin(LockingAdmin[M]):
    """Per-app access in the console: the changelist, change pages, actions,
    autocomplete (which reads this queryset) and the choices of app and job fields
    show only what the user may see. Other rows answer as missing."""

    # The path from the model to its app, as access.restrict() takes it.
    app_path: str

    def app_condition(self, request: HttpRequest) -> Q:
        return access.condition(request.user, self.app_path)

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
