# The admin's execution list filters by trigger, newest first.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0004_compat_uid_legacy"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="execution",
            index=models.Index(
                fields=["trigger", "-created"], name="jobs_execution_trigger"
            ),
        ),
    ]
