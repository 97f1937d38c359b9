from __future__ import annotations

from django.contrib import admin

from agents.models import Agent


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin[Agent]):
    list_display = [
        "name",
        "status",
        "host",
        "cpu_cores",
        "system_cpu_load",
        "memory_free",
        "last_heartbeat",
    ]
    list_filter = ["status"]
    search_fields = ["name", "host", "instance_id"]
    readonly_fields = [field.name for field in Agent._meta.fields]
