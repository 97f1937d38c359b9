"""Jobs as code: `jobs export`, `jobs apply FILE`, `jobs import-beat`.

python manage.py jobs export [--app A] > jobs.yaml
python manage.py jobs apply jobs.yaml [--dry-run] [--prune]
python manage.py jobs import-beat [--database-url URL] [--dry-run] [--output F]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from jobs import beat_import, jobfile


class Command(BaseCommand):
    help = "Export jobs to YAML, apply a YAML file, or import django-celery-beat."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        export = actions.add_parser("export", help="Write apps and jobs as YAML.")
        export.add_argument(
            "--app", action="append", default=[], help="Only this app (repeatable)."
        )
        apply = actions.add_parser("apply", help="Make the jobs match a YAML file.")
        apply.add_argument("file", help="The YAML file, or - for standard input.")
        apply.add_argument(
            "--dry-run", action="store_true", help="Show the changes; write nothing."
        )
        apply.add_argument(
            "--prune",
            action="store_true",
            help="Also delete jobs of the file's apps that the file does not list.",
        )
        beat = actions.add_parser(
            "import-beat", help="Import django-celery-beat periodic tasks."
        )
        beat.add_argument(
            "--database-url",
            default=None,
            help="Database holding django-celery-beat's tables (default: this one).",
        )
        beat.add_argument(
            "--app", default="celery-beat", help="App to put the jobs in."
        )
        beat.add_argument(
            "--dry-run", action="store_true", help="Show the changes; write nothing."
        )
        beat.add_argument(
            "--output",
            default=None,
            help="Write the jobs as YAML to this file (- for stdout) instead of "
            "applying them.",
        )
        beat.add_argument(
            "--disable-source",
            action="store_true",
            help="After applying, disable the imported periodic tasks so "
            "django-celery-beat stops firing them.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "export":
            try:
                text = jobfile.jobfile_export(apps=options["app"])
            except jobfile.JobfileError as exc:
                raise CommandError("; ".join(exc.problems)) from None
            self.stdout.write(text, ending="")
        elif action == "apply":
            name = options["file"]
            try:
                if name == "-":
                    text, filename = sys.stdin.read(), "<stdin>"
                else:
                    text, filename = Path(name).read_text(encoding="utf-8"), name
            except OSError as exc:
                raise CommandError(f"Cannot read {name}: {exc.strerror}") from None
            except UnicodeDecodeError as exc:
                raise CommandError(
                    f"Cannot read {name}: not UTF-8 text (byte {exc.start})."
                ) from None
            self._apply(text=text, filename=filename, **options)
        else:
            self._import_beat(**options)

    def _apply(self, *, text: str, filename: str, **options: Any) -> None:
        try:
            document = jobfile.jobfile_load(text=text, filename=filename)
            self._run(document, filename, options["dry_run"], options["prune"])
        except jobfile.JobfileError as exc:
            for problem in exc.problems:
                self.stderr.write(problem)
            raise CommandError(
                f"{filename}: {len(exc.problems)} problem(s); nothing was changed."
            ) from None

    def _run(
        self, document: Any, filename: str, dry_run: bool, prune: bool
    ) -> jobfile.Plan:
        if dry_run:
            plan = jobfile.jobfile_plan(
                document=document, filename=filename, prune=prune
            )
            self.stdout.write(plan.render())
            if not plan.empty:
                self.stdout.write("Dry run: nothing was changed.")
        else:
            plan = jobfile.jobfile_apply(
                document=document, filename=filename, prune=prune
            )
            self.stdout.write(plan.render())
            if not plan.empty:
                self.stdout.write(self.style.SUCCESS("Applied."))
        return plan

    def _import_beat(self, **options: Any) -> None:
        try:
            with beat_import.beat_models(database_url=options["database_url"]) as alias:
                try:
                    found = beat_import.beat_document(alias=alias, app=options["app"])
                except DatabaseError as exc:
                    raise CommandError(
                        f"Cannot read django-celery-beat's tables: {exc}"
                    ) from None
                for skipped in found.skipped:
                    self.stderr.write(f"skipped {skipped}")
                for note in found.notes:
                    self.stderr.write(f"note {note}")
                output = options["output"]
                if output:
                    text = yaml.safe_dump(found.document, sort_keys=False)
                    if output == "-":
                        self.stdout.write(text, ending="")
                    else:
                        Path(output).write_text(text)
                        self.stdout.write(
                            f"Wrote {len(found.sources)} job(s) to {output}."
                        )
                    return
                filename = "<django-celery-beat>"
                try:
                    self._run(found.document, filename, options["dry_run"], False)
                except jobfile.JobfileError as exc:
                    for problem in exc.problems:
                        self.stderr.write(problem)
                    raise CommandError(
                        f"{len(exc.problems)} problem(s); nothing was imported."
                    ) from None
                if options["disable_source"] and not options["dry_run"]:
                    n = beat_import.beat_disable_sources(
                        alias=alias, ids=list(found.sources.values())
                    )
                    self.stdout.write(
                        f"Disabled {n} periodic task(s) in django-celery-beat."
                    )
        except beat_import.BeatImportError as exc:
            raise CommandError(str(exc)) from None
