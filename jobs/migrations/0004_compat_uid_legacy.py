# Job.uid (Kala's public job id), Job.legacy (what compatibility APIs keep) and the
# "batch" kind (JobStreamer definitions of Java batchlets).

import uuid

from django.db import migrations, models


def fill_uids(apps, schema_editor):
    Job = apps.get_model("jobs", "Job")
    for job in Job.objects.filter(uid__isnull=True).only("pk").iterator():
        Job.objects.filter(pk=job.pk).update(uid=uuid.uuid4())


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0003_execution_events"),
    ]

    operations = [
        # Unique with a callable default: add nullable, fill one by one, then tighten
        # (a plain AddField would give every existing row the same uuid).
        migrations.AddField(
            model_name="job",
            name="uid",
            field=models.UUIDField(editable=False, null=True, verbose_name="UUID"),
        ),
        migrations.RunPython(fill_uids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="job",
            name="uid",
            field=models.UUIDField(
                default=uuid.uuid4,
                editable=False,
                help_text="Stable public id (Kala's job id).",
                unique=True,
                verbose_name="UUID",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="legacy",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="What a compatibility API keeps that has no field of its own (Kala's free-text name and epsilon, a JobStreamer definition).",
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="kind",
            field=models.CharField(
                choices=[
                    ("shell", "Shell"),
                    ("http", "Http"),
                    ("task", "Task"),
                    ("external", "External"),
                    ("batch", "Batch definition (not runnable)"),
                ],
                default="shell",
                max_length=20,
            ),
        ),
    ]
