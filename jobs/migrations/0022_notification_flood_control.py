"""Flood control of notifications: a rule's repeat_every (1 hour for the rules that
exist, as for new ones), what each channel was told about each job
(NotificationState), and deliveries held back (status `held`, a choice only: no
change to the delivery table)."""

import datetime

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models

RANGE = (
    "Enter a duration from 0 (send every failure) to 30 days, e.g. 01:00:00 for an "
    "hour."
)


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0021_drop_indexes_led_by_composites"),
    ]

    operations = [
        migrations.CreateModel(
            name="NotificationState",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True,
                        primary_key=True,
                        serialize=False,
                        verbose_name="ID",
                    ),
                ),
                (
                    "told",
                    models.CharField(
                        choices=[("ok", "Ok"), ("failing", "Failing")],
                        default="ok",
                        help_text="Failing from a failure or late run sent until the "
                        "next success.",
                        max_length=10,
                    ),
                ),
                (
                    "told_at",
                    models.DateTimeField(
                        blank=True,
                        help_text="When the last message was sent.",
                        null=True,
                    ),
                ),
                (
                    "held_back",
                    models.PositiveIntegerField(
                        default=0,
                        help_text="Failure and late messages held back since told_at.",
                    ),
                ),
                (
                    "health",
                    models.CharField(
                        choices=[("ok", "Ok"), ("failing", "Failing")],
                        default="ok",
                        help_text="What the job's last run showed (differs from told "
                        "while flapping).",
                        max_length=10,
                    ),
                ),
                ("health_since", models.DateTimeField(blank=True, null=True)),
                (
                    "changes",
                    models.PositiveIntegerField(
                        default=0,
                        help_text="Health changes since changes_since (flapping).",
                    ),
                ),
                ("changes_since", models.DateTimeField(blank=True, null=True)),
                (
                    "channel",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="states",
                        to="jobs.notificationchannel",
                    ),
                ),
                (
                    "job",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="notification_states",
                        to="jobs.job",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("job", "channel"),
                        name="jobs_notificationstate_one_per_pair",
                    )
                ],
            },
        ),
        migrations.AddField(
            model_name="notificationrule",
            name="repeat_every",
            field=models.DurationField(
                default=datetime.timedelta(hours=1),
                help_text="While the job keeps failing (or running late), one "
                "reminder at most this often; the failures in between are held back "
                "and counted. 0 sends every failure. [DD] [HH:[MM:]]ss, e.g. "
                "01:00:00.",
                validators=[
                    django.core.validators.MinValueValidator(
                        datetime.timedelta(0), message=RANGE
                    ),
                    django.core.validators.MaxValueValidator(
                        datetime.timedelta(days=30), message=RANGE
                    ),
                ],
            ),
        ),
        migrations.AddConstraint(
            model_name="notificationrule",
            constraint=models.CheckConstraint(
                condition=models.Q(("repeat_every__gte", datetime.timedelta(0)))
                & models.Q(("repeat_every__lte", datetime.timedelta(days=30))),
                name="jobs_notificationrule_repeat_every_range",
                violation_error_message=RANGE,
            ),
        ),
        migrations.AlterField(
            model_name="notificationdelivery",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("sent", "Sent"),
                    ("failed", "Failed"),
                    ("held", "Held back"),
                ],
                default="pending",
                max_length=10,
            ),
        ),
    ]
