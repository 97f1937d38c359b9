"""The four roles as groups: viewer, operator, editor, admin.

viewer   reads everything.
operator viewer + runs, pauses, resumes, kills and retries executions, drains agents.
editor   operator + creates and edits apps, jobs and schedules (not shell jobs).
admin    editor + shell jobs, notification settings, API tokens, the audit log.

Re-running is harmless; permissions added by later migrations (API tokens: 0011) are
granted by the migration that adds them.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

VIEW = [
    "jobs.view_app",
    "jobs.view_job",
    "jobs.view_schedule",
    "jobs.view_execution",
    "jobs.view_executionevent",
    "agents.view_agent",
]
OPERATE = [
    "jobs.add_execution",
    "jobs.change_execution",
    "agents.change_agent",
]
EDIT = [
    f"jobs.{verb}_{model}"
    for model in ("app", "job", "schedule")
    for verb in ("add", "change", "delete")
]
ADMIN = [
    "jobs.manage_shell_job",
    "jobs.delete_execution",
    "jobs.view_notificationchannel",
    "jobs.add_notificationchannel",
    "jobs.change_notificationchannel",
    "jobs.delete_notificationchannel",
    "jobs.view_notificationrule",
    "jobs.add_notificationrule",
    "jobs.change_notificationrule",
    "jobs.delete_notificationrule",
    "jobs.view_notificationdelivery",
    "audit.view_auditentry",
]
ROLES = {
    "viewer": VIEW,
    "operator": VIEW + OPERATE,
    "editor": VIEW + OPERATE + EDIT,
    "admin": VIEW + OPERATE + EDIT + ADMIN,
}


def create_roles(apps: Any, schema_editor: Any) -> None:
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after all migrations; the roles need them now.
    for config in apps.get_app_configs():
        config.models_module = True
        create_permissions(config, verbosity=0, apps=apps)
        config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codes in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        for code in codes:
            app_label, codename = code.split(".")
            permission = Permission.objects.filter(
                content_type__app_label=app_label, codename=codename
            ).first()
            if permission is not None:
                group.permissions.add(permission)


def remove_roles(apps: Any, schema_editor: Any) -> None:
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0008_job_shell_permission"),
        ("agents", "0002_stats_and_unique_name"),
        ("audit", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
