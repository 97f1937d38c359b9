from __future__ import annotations

import csv

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from audit.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin[AuditEntry]):
    list_display = ["created", "actor_name", "method", "path", "status", "address"]
    list_filter = ["method", "status", "actor_name"]
    search_fields = ["path", "actor_name", "address"]
    date_hierarchy = "created"
    show_full_result_count = False
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
