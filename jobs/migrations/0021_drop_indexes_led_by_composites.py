"""Drop the single-column indexes Django made for four foreign keys whose column
already leads a composite index or unique constraint (each is written on every
insert, and the composite one serves the same lookups and cascades).

Only the indexes are dropped. Django's own AlterField would also drop and re-add
each foreign key constraint, which re-checks every row under a lock that blocks
writes: minutes on a large log-chunk table. The index names are those Django gave
them (derived from table and column), the same on PostgreSQL and SQLite."""

import django.db.models.deletion
from django.db import migrations, models

INDEXES = [
    (
        "jobs_executionevent",
        "execution_id",
        "jobs_executionevent_execution_id_1c59392d",
    ),
    (
        "jobs_executionlogchunk",
        "execution_id",
        "jobs_executionlogchunk_execution_id_4eca8f1f",
    ),
    ("jobs_job", "app_id", "jobs_job_app_id_d9d4a48d"),
    ("jobs_jobsecret", "job_id", "jobs_jobsecret_job_id_8f9c0659"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0020_job_max_retries_bound"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{name}"',
                    reverse_sql=f'CREATE INDEX IF NOT EXISTS "{name}" '
                    f'ON "{table}" ("{column}")',
                )
                for table, column, name in INDEXES
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="executionevent",
                    name="execution",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="jobs.execution",
                    ),
                ),
                migrations.AlterField(
                    model_name="executionlogchunk",
                    name="execution",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="log_chunks",
                        to="jobs.execution",
                    ),
                ),
                migrations.AlterField(
                    model_name="job",
                    name="app",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="jobs",
                        to="jobs.app",
                    ),
                ),
                migrations.AlterField(
                    model_name="jobsecret",
                    name="job",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="secrets",
                        to="jobs.job",
                    ),
                ),
            ],
        ),
    ]
