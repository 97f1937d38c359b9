from __future__ import annotations

import csv
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from audit.models import AuditEntry
from karmchari_site.admin_ui import CappedPaginator


class MethodFilter(admin.SimpleListFilter):
    title = "method"
    parameter_name = "method"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(m, m) for m in ("POST", "PUT", "PATCH", "DELETE")]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[AuditEntry]
    ) -> QuerySet[AuditEntry]:
        value = self.value()
        return queryset.filter(method=value) if value else queryset


class StatusFilter(admin.SimpleListFilter):
    title = "answer"
    parameter_name = "answered"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("2", "2xx"), ("3", "3xx"), ("4", "4xx"), ("5", "5xx")]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[AuditEntry]
    ) -> QuerySet[AuditEntry]:
        value = self.value()
        if value not in ("2", "3", "4", "5"):
            return queryset
        low = int(value) * 100
        return queryset.filter(status__gte=low, status__lt=low + 100)


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin[AuditEntry]):
    list_display = ["created", "actor_name", "method", "path", "status", "address"]
    # Fixed choices and ranges only: a filter listing the values found, or
    # date_hierarchy, is a DISTINCT over the whole log.
    list_filter = [MethodFilter, StatusFilter, "created"]
    search_fields = ["path", "actor_name", "address"]
    show_full_result_count = False
    paginator = CappedPaginator
    actions = ["export_csv"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: AuditEntry | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: AuditEntry | None = None
    ) -> bool:
        return False

    @admin.action(description="Export selected entries as CSV", permissions=["view"])
    def export_csv(
        self, request: HttpRequest, queryset: QuerySet[AuditEntry]
    ) -> HttpResponse:
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="audit.csv"'
        writer = csv.writer(response)
        writer.writerow(["created", "who", "method", "path", "status", "from"])
        for entry in queryset.order_by("created", "id").iterator():
            writer.writerow(
                [
                    entry.created.isoformat(),
                    entry.actor_name,
                    entry.method,
                    entry.path,
                    entry.status,
                    entry.address or "",
                ]
            )
        return response
