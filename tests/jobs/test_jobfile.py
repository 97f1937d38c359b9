from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from jobs import jobfile, services
from jobs.models import App, Job, Schedule
from jobs.secrets import job_secrets_reveal

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("jobs", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def apply_text(tmp_path: Path, text: str, *args: str) -> str:
    path = tmp_path / "jobs.yaml"
    path.write_text(text)
    return run("apply", str(path), *args)


def problems(tmp_path: Path, text: str, *args: str) -> str:
    """The problems the file is refused with, the documented way: a CommandError and
    nothing written."""
    before = (App.objects.count(), Job.objects.count(), Schedule.objects.count())
    path = tmp_path / "jobs.yaml"
    path.write_text(text)
    err = io.StringIO()
    with pytest.raises(CommandError, match="nothing was changed"):
        call_command(
            "jobs", "apply", str(path), *args, stdout=io.StringIO(), stderr=err
        )
    after = (App.objects.count(), Job.objects.count(), Schedule.objects.count())
    assert after == before
    return err.getvalue()


@pytest.fixture
def world(make_app: Callable[..., App]) -> dict[str, Job]:
    ops = make_app("ops", description="Operations", meta={"team": "sre"})
    make_app("other")
    backup = services.job_create(
        app=ops,
        name="backup",
        spec={"command": "backup.sh", "env": {"DB_PASSWORD": "hunter2", "N": "1"}},
        timeout=600,
        max_retries=2,
        tags=["nightly"],
        overlap_policy=Job.OverlapPolicy.BUFFER_ONE,
    )
    report = services.job_create(
        app=ops, name="report", spec={"command": "report.sh"}, parents=[backup]
    )
    services.schedule_create(
        job=backup,
        kind="cron",
        expression="0 3 * * *",
        timezone="Europe/Paris",
        epsilon=timedelta(seconds=90),
    )
    services.schedule_create(
        job=backup, kind="interval", expression="R/2026-01-01T00:00:00Z/PT6H"
    )
    return {"backup": backup, "report": report}


def test_it_round_trips_an_export_without_changes(
    world: dict[str, Job], tmp_path: Path
) -> None:
    exported = run("export")
    assert "hunter2" not in exported  # secrets are masked
    document = yaml.safe_load(exported)
    backup = document["apps"]["ops"]["jobs"]["backup"]
    assert backup["timeout"] == 600
    assert backup["schedules"][0] == {
        "kind": "cron",
        "expression": "0 3 * * *",
        "timezone": "Europe/Paris",
        "epsilon": 90,
    }
    assert document["apps"]["ops"]["jobs"]["report"]["parents"] == ["backup"]
    schedule_ids = set(Schedule.objects.values_list("pk", flat=True))

    assert backup["spec"] == {"command": "backup.sh", "env": {"N": "1"}}
    assert backup["secrets"] == {"DB_PASSWORD": "********"}
    assert "secrets" not in document["apps"]["ops"]["jobs"]["report"]

    assert apply_text(tmp_path, exported).strip() == "No changes."
    assert run("export") == exported
    assert set(Schedule.objects.values_list("pk", flat=True)) == schedule_ids
    assert job_secrets_reveal(job_id=world["backup"].pk) == {"DB_PASSWORD": "hunter2"}


def test_it_exports_only_the_asked_app(world: dict[str, Job]) -> None:
    document = yaml.safe_load(run("export", "--app", "other"))
    assert list(document["apps"]) == ["other"]


FILE = """\
version: 1
apps:
  ops:
    description: Operations
    jobs:
      extract:
        spec: {command: extract.sh}
        schedules:
          - {kind: cron, expression: "*/5 * * * *"}
      load:
        spec: {command: load.sh}
        timeout: 30
        parents: [extract, other/audit]
  other:
    jobs:
      audit:
        kind: external
        spec: {}
"""


def test_it_creates_what_a_file_declares_and_is_idempotent(tmp_path: Path) -> None:
    out = apply_text(tmp_path, FILE)
    assert "+ app ops" in out
    assert "+ job ops/load" in out
    assert "+ schedule cron '*/5 * * * *' (UTC)" in out
    assert "parents: none -> ops/extract, other/audit" in out
    load = Job.objects.get(name="load")
    assert load.timeout == 30
    assert {p.name for p in load.parents.all()} == {"extract", "audit"}
    schedule = Schedule.objects.get(job__name="extract")
    assert schedule.next_run_at is not None

    assert apply_text(tmp_path, FILE).strip() == "No changes."


def test_it_shows_a_diff_on_dry_run_and_writes_nothing(
    world: dict[str, Job], tmp_path: Path
) -> None:
    document = yaml.safe_load(run("export", "--app", "ops"))
    backup = document["apps"]["ops"]["jobs"]["backup"]
    backup["timeout"] = 1200
    backup["schedules"][0]["enabled"] = False
    backup["schedules"][1]["expression"] = "R/2026-01-01T00:00:00Z/PT12H"
    document["apps"]["ops"]["jobs"]["fresh"] = {"spec": {"command": "true"}}
    del document["apps"]["ops"]["jobs"]["report"]
    text = yaml.safe_dump(document, sort_keys=False)

    out = apply_text(tmp_path, text, "--dry-run", "--prune")

    assert out.splitlines() == [
        "~ job ops/backup",
        "    timeout: 600 -> 1200",
        "    ~ schedule cron '0 3 * * *' (Europe/Paris): enabled: true -> false",
        "    + schedule interval 'R/2026-01-01T00:00:00Z/PT12H' (UTC)",
        "    - schedule interval 'R/2026-01-01T00:00:00Z/PT6H' (UTC)",
        "+ job ops/fresh",
        "- job ops/report",
        "1 to create, 1 to change, 1 to delete.",
        "Dry run: nothing was changed.",
    ]
    world["backup"].refresh_from_db()
    assert world["backup"].timeout == 600
    assert Job.objects.filter(name="report").exists()
    assert not Job.objects.filter(name="fresh").exists()


def test_it_changes_a_schedule_in_place_and_prunes_only_when_asked(
    world: dict[str, Job], tmp_path: Path
) -> None:
    document = yaml.safe_load(run("export", "--app", "ops"))
    document["apps"]["ops"]["jobs"]["backup"]["schedules"][0]["enabled"] = False
    del document["apps"]["ops"]["jobs"]["report"]
    text = yaml.safe_dump(document, sort_keys=False)
    cron = Schedule.objects.get(kind="cron")

    apply_text(tmp_path, text)
    cron.refresh_from_db()
    assert cron.enabled is False  # the same row, edited
    assert Job.objects.filter(name="report").exists()

    apply_text(tmp_path, text, "--prune")
    assert not Job.objects.filter(name="report").exists()
    assert Job.objects.filter(app__name="other").count() == 0  # untouched app
    assert apply_text(tmp_path, text, "--prune").strip() == "No changes."


def test_it_names_the_file_position_of_each_problem(tmp_path: Path) -> None:
    text = """\
apps:
  ops:
    jobs:
      bad:
        spec: {command: "true"}
        timeout: soon
        overlap_policy: sometimes
        schedules:
          - {kind: cron, expression: "61 * * * *"}
      ghost:
        spec: {}
        kind: teleport
        parents: [nowhere]
"""
    path = tmp_path / "jobs.yaml"
    path.write_text(text)
    err = io.StringIO()
    with pytest.raises(CommandError, match="nothing was changed"):
        call_command("jobs", "apply", str(path), stdout=io.StringIO(), stderr=err)
    problems = err.getvalue()
    assert f"{path}:6:18: apps.ops.jobs.bad.timeout:" in problems
    assert f"{path}:7:25: apps.ops.jobs.bad.overlap_policy:" in problems
    assert f"{path}:9:38: apps.ops.jobs.bad.schedules[0].expression:" in problems
    assert "minute" in problems
    assert f"{path}:12:15: apps.ops.jobs.ghost.kind:" in problems
    assert not App.objects.exists()


def test_it_reports_where_the_yaml_is_broken(tmp_path: Path) -> None:
    with pytest.raises(jobfile.JobfileError) as caught:
        jobfile.jobfile_load(text="apps:\n  ops: {jobs: [\n", filename="j.yaml")
    assert caught.value.problems[0].startswith("j.yaml:3:1:")


def test_it_refuses_a_masked_secret_without_a_stored_one(tmp_path: Path) -> None:
    text = """\
apps:
  ops:
    jobs:
      new:
        spec: {command: "true", env: {API_TOKEN: "********"}}
"""
    with pytest.raises(jobfile.JobfileError, match="no stored secret"):
        jobfile.jobfile_plan(document=jobfile.jobfile_load(text=text, filename="f"))


def test_it_applies_a_changed_secret_without_printing_it(
    world: dict[str, Job], tmp_path: Path
) -> None:
    document = yaml.safe_load(run("export", "--app", "ops"))
    document["apps"]["ops"]["jobs"]["backup"]["secrets"]["DB_PASSWORD"] = "new"
    out = apply_text(tmp_path, yaml.safe_dump(document))
    assert "~ secret DB_PASSWORD: value changed" in out
    assert "hunter2" not in out
    assert "new" not in out.replace("~ secret", "")
    assert job_secrets_reveal(job_id=world["backup"].pk) == {"DB_PASSWORD": "new"}
    # The same value again is no change: the file is compared with what is stored.
    assert apply_text(tmp_path, yaml.safe_dump(document)).strip() == "No changes."


def test_it_creates_keeps_and_deletes_secrets_by_the_file(
    world: dict[str, Job], tmp_path: Path
) -> None:
    document = yaml.safe_load(run("export", "--app", "ops"))
    jobs = document["apps"]["ops"]["jobs"]
    jobs["backup"]["secrets"] = {"S3_KEY": "s3-value"}  # DB_PASSWORD left out
    jobs["report"]["secrets"] = {"REPORT_TOKEN": "r-value"}
    jobs["fresh"] = {"spec": {"command": "x"}, "secrets": {"NEW_TOKEN": "n-value"}}
    out = apply_text(tmp_path, yaml.safe_dump(document))
    assert "+ secret S3_KEY" in out
    assert "- secret DB_PASSWORD" in out
    assert "+ secret REPORT_TOKEN" in out
    assert "+ secret NEW_TOKEN" in out
    for value in ("s3-value", "r-value", "n-value", "hunter2"):
        assert value not in out
    assert job_secrets_reveal(job_id=world["backup"].pk) == {"S3_KEY": "s3-value"}
    assert job_secrets_reveal(job_id=world["report"].pk) == {"REPORT_TOKEN": "r-value"}
    fresh = Job.objects.get(name="fresh")
    assert job_secrets_reveal(job_id=fresh.pk) == {"NEW_TOKEN": "n-value"}
    exported = run("export", "--app", "ops")
    assert "n-value" not in exported
    assert yaml.safe_load(exported)["apps"]["ops"]["jobs"]["fresh"]["secrets"] == {
        "NEW_TOKEN": "********"
    }


def test_it_moves_secrets_out_of_a_spec_in_the_file(
    world: dict[str, Job], tmp_path: Path
) -> None:
    document = yaml.safe_load(run("export", "--app", "ops"))
    backup = document["apps"]["ops"]["jobs"]["backup"]
    del backup["secrets"]
    # An old file: the secret masked inside the spec keeps the stored value.
    backup["spec"]["env"]["DB_PASSWORD"] = "********"
    assert apply_text(tmp_path, yaml.safe_dump(document)).strip() == "No changes."
    backup["spec"]["env"]["DB_PASSWORD"] = "from-the-file"
    out = apply_text(tmp_path, yaml.safe_dump(document))
    assert "~ secret DB_PASSWORD: value changed" in out
    world["backup"].refresh_from_db()
    assert world["backup"].spec == {"command": "backup.sh", "env": {"N": "1"}}
    assert job_secrets_reveal(job_id=world["backup"].pk) == {
        "DB_PASSWORD": "from-the-file"
    }


@pytest.mark.parametrize(
    ("secrets", "problem"),
    [
        ("{NEW_TOKEN: '********'}", "secrets.NEW_TOKEN: holds the placeholder"),
        ("{bad-name: x}", "secrets.bad-name: Not a valid name"),
        ("{EMPTY: null}", "secrets.EMPTY: is empty"),
        ("[x]", "secrets: must be a mapping"),
    ],
)
def test_it_refuses_bad_secrets_in_a_file(secrets: str, problem: str) -> None:
    text = f"""\
apps:
  ops:
    jobs:
      new:
        spec: {{command: "true"}}
        secrets: {secrets}
"""
    with pytest.raises(jobfile.JobfileError) as caught:
        jobfile.jobfile_plan(document=jobfile.jobfile_load(text=text, filename="f"))
    assert problem in str(caught.value)


def test_it_round_trips_a_ping_grace_in_seconds(
    make_app: Callable[..., App], tmp_path: Path
) -> None:
    services.job_create(
        app=make_app("ops"),
        name="heartbeat",
        kind=Job.Kind.EXTERNAL,
        spec={},
        ping_grace=timedelta(minutes=5),
    )
    exported = run("export")
    assert yaml.safe_load(exported)["apps"]["ops"]["jobs"]["heartbeat"] == {
        "kind": "external",
        "spec": {},
        "ping_grace": 300,
    }
    assert apply_text(tmp_path, exported).strip() == "No changes."

    apply_text(tmp_path, exported.replace("ping_grace: 300", "ping_grace: 90"))
    assert Job.objects.get(name="heartbeat").ping_grace == timedelta(seconds=90)


@pytest.mark.parametrize(
    ("grace", "problem"),
    [
        ("-1", "Must not be negative."),
        ("31622401", "Must be at most 366 days."),
        ("'00:05:00'", "must be a number of seconds"),
    ],
)
def test_it_refuses_a_ping_grace_the_api_refuses(
    tmp_path: Path, grace: str, problem: str
) -> None:
    text = f"""\
apps:
  ops:
    jobs:
      heartbeat: {{kind: external, spec: {{}}, ping_grace: {grace}}}
"""
    assert f"apps.ops.jobs.heartbeat.ping_grace: {problem}" in problems(tmp_path, text)


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        ("epsilon: .inf", "epsilon: Numbers must be finite"),
        # Past 64-bit microseconds: an OverflowError making the timedelta.
        ("jitter: 10000000000000", "jitter: Must be at most 366 days."),
        # A year 10000 in UTC: an OverflowError computing the next run.
        (
            "start_at: '9999-12-31T23:59:59-23:00'",
            "start_at: Must be between 1971 and 9998.",
        ),
        ("repetitions_left: .nan", "repetitions_left: Numbers must be finite"),
    ],
)
def test_it_refuses_a_schedule_out_of_range(
    tmp_path: Path, schedule: str, problem: str
) -> None:
    text = f"""\
apps:
  ops:
    jobs:
      nightly:
        spec: {{command: "true"}}
        schedules:
        - {{kind: cron, expression: '* * * * *', {schedule}}}
"""
    assert f"apps.ops.jobs.nightly.schedules[0].{problem}" in problems(tmp_path, text)


@pytest.mark.parametrize(
    ("app", "problem"),
    [
        # Stored as Infinity: SQLite's JSON_VALID check (IntegrityError) and
        # PostgreSQL's jsonb (DataError) refuse it mid-apply.
        ("meta: {ratio: .inf}", ":2:23: apps.ops.meta.ratio: Numbers must be finite"),
        (
            "jobs: {hook: {kind: http, spec: {url: 'http://x/', body: [.nan]}}}",
            "apps.ops.jobs.hook.spec.body[0]: Numbers must be finite",
        ),
        # Django's integer fields raise OverflowError converting it.
        ("jobs: {slow: {spec: {command: x}, timeout: .inf}}", "slow.timeout: Numbers"),
        ('description: "a\\0b"', "apps.ops.description: Text must not contain NUL"),
    ],
)
def test_it_refuses_a_value_no_database_stores(
    tmp_path: Path, app: str, problem: str
) -> None:
    assert problem in problems(tmp_path, f"apps:\n  ops: {{{app}}}\n")


def test_it_refuses_a_spec_that_is_not_json(tmp_path: Path) -> None:
    # A YAML date: the JSONField could not save it (TypeError).
    text = """\
apps:
  ops:
    jobs:
      hook: {kind: http, spec: {url: "http://x/", body: {day: 2026-01-01}}}
"""
    assert "apps.ops.jobs.hook.spec: must hold only JSON values" in problems(
        tmp_path, text
    )


@pytest.mark.parametrize(
    ("jobs", "cycle"),
    [
        ("a: {spec: {command: x}, parents: [a]}", "ops/a -> ops/a"),
        (
            "a: {spec: {command: x}, parents: [b]}, "
            "b: {spec: {command: x}, parents: [a]}",
            "ops/a -> ops/b -> ops/a",
        ),
        # Through the stored jobs: c runs after b, which runs after a.
        ("a: {spec: {command: x}, parents: [c]}", "ops/a -> ops/c -> ops/b -> ops/a"),
    ],
    ids=["self", "two-jobs", "through-the-database"],
)
def test_it_refuses_a_dependency_cycle(
    make_app: Callable[..., App], tmp_path: Path, jobs: str, cycle: str
) -> None:
    ops = make_app("ops")
    a = services.job_create(app=ops, name="a", spec={"command": "x"})
    b = services.job_create(app=ops, name="b", spec={"command": "x"}, parents=[a])
    services.job_create(app=ops, name="c", spec={"command": "x"}, parents=[b])
    found = problems(tmp_path, f"apps:\n  ops:\n    jobs: {{{jobs}}}\n")
    assert f"apps.ops.jobs.a.parents: would depend on itself: {cycle}" in found
    assert found.count("would depend on itself") == 1


def test_it_swaps_a_parent_and_its_child(
    make_app: Callable[..., App], tmp_path: Path
) -> None:
    # Set one job at a time, a's new parent b would still run after a: the links
    # the file drops go first.
    ops = make_app("ops")
    a = services.job_create(app=ops, name="a", spec={"command": "x"})
    services.job_create(app=ops, name="b", spec={"command": "x"}, parents=[a])
    text = """\
apps:
  ops:
    jobs:
      a: {spec: {command: x}, parents: [b]}
      b: {spec: {command: x}}
"""
    apply_text(tmp_path, text)
    links = {job.name: [p.name for p in job.parents.all()] for job in Job.objects.all()}
    assert links == {"a": ["b"], "b": []}


def test_it_unlinks_a_kept_child_before_pruning_its_parent(
    make_app: Callable[..., App], tmp_path: Path
) -> None:
    # Pruned first, `extract` would take `report` along (its only parent: Kala's
    # rule), and setting report's parents would then save a deleted row.
    ops = make_app("ops")
    extract = services.job_create(app=ops, name="extract", spec={"command": "x"})
    services.job_create(
        app=ops, name="report", spec={"command": "y"}, parents=[extract]
    )
    text = "apps:\n  ops:\n    jobs:\n      report:\n        spec: {command: y}\n"
    out = apply_text(tmp_path, text, "--prune")
    assert "- job ops/extract" in out
    assert list(Job.objects.values_list("name", flat=True)) == ["report"]
    assert not Job.objects.get(name="report").parents.exists()


def test_it_refuses_a_parent_the_prune_deletes(
    make_app: Callable[..., App], tmp_path: Path
) -> None:
    # Pruning `extract` would delete `report` too, a job the file declares.
    ops = make_app("ops")
    extract = services.job_create(app=ops, name="extract", spec={"command": "x"})
    services.job_create(
        app=ops, name="report", spec={"command": "y"}, parents=[extract]
    )
    text = """\
apps:
  ops:
    jobs:
      report:
        spec: {command: y}
        parents: [extract]
"""
    found = problems(tmp_path, text, "--prune")
    assert (
        f"{tmp_path / 'jobs.yaml'}:6:18: apps.ops.jobs.report.parents: "
        "'ops/extract' is not in the file, so the prune deletes it"
    ) in found
    assert apply_text(tmp_path, text).strip() == "No changes."  # without --prune


def test_it_lists_the_jobs_a_prune_takes_along(
    make_app: Callable[..., App], tmp_path: Path
) -> None:
    ops, other = make_app("ops"), make_app("other")
    source = services.job_create(app=ops, name="source", spec={"command": "x"})
    sink = services.job_create(
        app=other, name="sink", spec={"command": "x"}, parents=[source]
    )
    services.job_create(app=other, name="audit", spec={"command": "x"}, parents=[sink])
    text = "apps:\n  ops:\n    jobs:\n      kept:\n        spec: {command: x}\n"
    found = problems(tmp_path, text + "        parents: [other/audit]\n", "--prune")
    assert "'other/audit' goes with its last parent, which the prune deletes" in found

    out = apply_text(tmp_path, text, "--prune")
    assert out.splitlines()[:7] == [
        "+ job ops/kept",
        "- job ops/source",
        "- job other/audit",
        "    no parent left once the jobs above are deleted",
        "- job other/sink",
        "    no parent left once the jobs above are deleted",
        "1 to create, 0 to change, 3 to delete.",
    ]
    assert list(Job.objects.values_list("name", flat=True)) == ["kept"]


def test_it_takes_the_default_for_null_where_a_field_may_be_empty(
    tmp_path: Path,
) -> None:
    """As the app's description always has: YAML reads `description:` with nothing
    after it as null, which the database refused mid-apply (IntegrityError) after
    --dry-run had accepted it."""
    text = """\
apps:
  ops:
    description:
    jobs:
      nightly:
        spec: {command: x}
        description:
        owner: null
        tags: null
        schedules:
        - {kind: cron, expression: '0 3 * * *', jitter: null}
"""
    dry = apply_text(tmp_path, text, "--dry-run")
    assert apply_text(tmp_path, text) == dry.replace(
        "Dry run: nothing was changed.", "Applied."
    )
    job = Job.objects.get()
    assert (job.description, job.owner, job.tags) == ("", "", [])
    assert Schedule.objects.get().jitter == timedelta(0)
    assert apply_text(tmp_path, text).strip() == "No changes."


def test_it_still_refuses_null_where_a_field_may_not_be_empty(
    tmp_path: Path,
) -> None:
    text = """\
apps:
  ops:
    jobs:
      nightly:
        spec: {command: x}
        queue: null
        schedules:
        - {kind: cron, expression: '0 3 * * *', misfire_policy: null}
"""
    found = problems(tmp_path, text)
    assert "apps.ops.jobs.nightly.queue: This field cannot be null." in found
    assert "nightly.schedules[0].misfire_policy: This field cannot be null." in found


def test_it_round_trips_a_job_with_the_same_schedule_twice(
    make_app: Callable[..., App], tmp_path: Path
) -> None:
    """The API and the admin allow it: the export must apply, as no changes."""
    job = services.job_create(app=make_app("ops"), name="j", spec={"command": "x"})
    first = services.schedule_create(job=job, kind="cron", expression="0 3 * * *")
    second = services.schedule_create(
        job=job, kind="cron", expression="0 3 * * *", epsilon=timedelta(seconds=5)
    )
    exported = run("export")
    assert apply_text(tmp_path, exported).strip() == "No changes."

    # Matched in order: each row keeps its own values (and its history).
    document = yaml.safe_load(exported)
    document["apps"]["ops"]["jobs"]["j"]["schedules"][1]["epsilon"] = 7
    out = apply_text(tmp_path, yaml.safe_dump(document))
    assert "epsilon: 5 -> 7" in out
    rows = {s.pk: s.epsilon for s in Schedule.objects.all()}
    assert rows == {first.pk: None, second.pk: timedelta(seconds=7)}


@pytest.mark.parametrize(
    ("app", "problem"),
    [
        ("meta: {1: a}", ":2:19: apps.ops.meta: the key 1 is not text"),
        (
            "jobs: {hook: {kind: http, spec: {url: 'http://x/', body: {2: b}}}}",
            "apps.ops.jobs.hook.spec.body: the key 2 is not text",
        ),
        (
            "jobs: {s: {spec: {command: x, env: {1: b}}}}",
            "apps.ops.jobs.s.spec.env: the key 1 is not text",
        ),
        # YAML 1.1 reads these names as booleans and None.
        ("jobs: {on: {spec: {command: x}}}", "apps.ops.jobs: the key True is not"),
        ("jobs: {no: {spec: {command: x}}}", "apps.ops.jobs: the key False is not"),
        ("jobs: {null: {spec: {command: x}}}", "apps.ops.jobs: the key None is not"),
    ],
)
def test_it_refuses_keys_that_are_not_text(
    tmp_path: Path, app: str, problem: str
) -> None:
    """Stored as "1", "True" or "None" (JSON's keys are text), so each apply saw a
    change again, or crashed (a shell env name)."""
    found = problems(tmp_path, f"apps:\n  ops: {{{app}}}\n")
    assert problem in found
    assert "quote it" in found


@pytest.mark.parametrize(
    ("field", "path"),
    [
        ("timeout: 1.5", "apps.ops.jobs.j.timeout"),
        ("max_retries: 2.9", "apps.ops.jobs.j.max_retries"),
        ("keep_days: true", "apps.ops.jobs.j.keep_days"),
        (
            "schedules: [{kind: cron, expression: '* * * * *', repetitions_left: 0.5}]",
            "apps.ops.jobs.j.schedules[0].repetitions_left",
        ),
    ],
)
def test_it_refuses_a_fraction_for_a_whole_number(
    tmp_path: Path, field: str, path: str
) -> None:
    """Django's int() cut 1.5 to 1 (and read true as 1); the API refuses both."""
    text = f"apps:\n  ops:\n    jobs:\n      j: {{spec: {{command: x}}, {field}}}\n"
    assert f"{path}: must be a whole number" in problems(tmp_path, text)


def test_it_takes_a_whole_number_written_with_a_point(tmp_path: Path) -> None:
    apply_text(
        tmp_path,
        "apps:\n  ops:\n    jobs:\n      j: {spec: {command: x}, timeout: 60.0}\n",
    )
    assert Job.objects.get().timeout == 60


def test_it_links_a_parent_listed_twice_once(tmp_path: Path) -> None:
    text = """\
apps:
  ops:
    jobs:
      a: {spec: {command: x}}
      b: {spec: {command: x}, parents: [a, ops/a]}
"""
    apply_text(tmp_path, text)
    assert [p.name for p in Job.objects.get(name="b").parents.all()] == ["a"]
    assert apply_text(tmp_path, text).strip() == "No changes."


def test_it_refuses_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_bytes(b'apps:\n  ops: {description: "\xff\xfe"}\n')
    with pytest.raises(CommandError, match=r"not UTF-8 text \(byte 28\)"):
        call_command(
            "jobs", "apply", str(path), stdout=io.StringIO(), stderr=io.StringIO()
        )


def test_it_refuses_yaml_nested_too_deeply(tmp_path: Path) -> None:
    """PyYAML builds nested collections recursively (RecursionError)."""
    text = "apps:\n  ops:\n    meta: {x: " + "[" * 3000 + "]" * 3000 + "}\n"
    assert "jobs.yaml: nested too deeply" in problems(tmp_path, text)


def test_it_refuses_to_export_an_unknown_app(world: dict[str, Job]) -> None:
    with pytest.raises(CommandError, match=r"^no app named 'typo'$"):
        run("export", "--app", "ops", "--app", "typo")
