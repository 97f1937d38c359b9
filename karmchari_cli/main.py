"""The `karmchari` command.

    karmchari jobs list [--app A]
    karmchari run JOB [--wait] [--follow] [--param NAME=VALUE]
    karmchari executions list [--job JOB] [--status S] [--limit N]
    karmchari pause|resume|kill EXECUTION
    karmchari agents
    karmchari schedules preview EXPR [--tz ZONE] [--kind cron] [-n 10]

Server and token: --url/--token, else KARMCHARI_URL/KARMCHARI_TOKEN, else the config
file (KARMCHARI_CONFIG, default ~/.config/karmchari/config.ini, section [default]).
Exit codes: 0 ok, 1 an API or connection error, 2 bad usage, 3 authentication; `run
--wait` ends with 0 if the run succeeded, else with the exit code of its shell command
or external process (128 + N if a signal N killed it, as shells say), or 1 (never 0).
With --json, `run --follow` writes the run's output to stderr, so that stdout holds
only the JSON of the finished execution.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from karmchari_cli import output
from karmchari_cli.client import Client, CliError, load_settings

logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.5
_FINAL = {"succeeded", "failed", "killed", "timed_out", "lost", "skipped"}


def _count(most: int) -> Callable[[str], int]:
    """An argparse type: a whole number from 1 to `most`, the server's limits (a
    page_size of 0 would silently get the default page)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 1 <= value <= most:
            raise argparse.ArgumentTypeError(f"must be from 1 to {most}, not {value}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="karmchari", description="Drive Karmchari from a terminal."
    )
    parser.add_argument("--url", help="Server URL (KARMCHARI_URL).")
    parser.add_argument("--token", help="API token (KARMCHARI_TOKEN).")
    parser.add_argument("--profile", default="default", help="Config file section.")
    parser.add_argument("--json", action="store_true", help="Print JSON, not tables.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    jobs = commands.add_parser("jobs", help="Jobs.")
    jobs_actions = jobs.add_subparsers(dest="action", required=True)
    jobs_list = jobs_actions.add_parser("list", help="List jobs.")
    jobs_list.add_argument("--app", help="Only this app's jobs.")
    jobs_list.set_defaults(handler=jobs_list_command)

    run = commands.add_parser("run", help="Run a job now.")
    run.add_argument("job", help="Job id, name, or app/name.")
    run.add_argument("--wait", action="store_true", help="Wait for the end.")
    run.add_argument(
        "--follow", action="store_true", help="Stream its output live (implies --wait)."
    )
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="A run parameter (repeatable).",
    )
    run.set_defaults(handler=run_command)

    executions = commands.add_parser("executions", help="Executions.")
    executions_actions = executions.add_subparsers(dest="action", required=True)
    executions_list = executions_actions.add_parser("list", help="Newest first.")
    executions_list.add_argument("--job", help="Job id, name or app/name.")
    executions_list.add_argument("--app", help="Only this app's executions.")
    executions_list.add_argument("--status", help="e.g. failed, running.")
    executions_list.add_argument(
        "--limit", type=_count(500), default=20, help="How many (1-500, default 20)."
    )
    executions_list.set_defaults(handler=executions_list_command)

    for verb in ("pause", "resume", "kill"):
        control = commands.add_parser(verb, help=f"{verb.capitalize()} an execution.")
        control.add_argument("execution", type=int, help="Execution id.")
        control.set_defaults(handler=control_command, verb=verb)

    agents = commands.add_parser("agents", help="List agents (workers).")
    agents.set_defaults(handler=agents_command)

    schedules = commands.add_parser("schedules", help="Schedules.")
    schedules_actions = schedules.add_subparsers(dest="action", required=True)
    preview = schedules_actions.add_parser(
        "preview", help="Next fire times of an expression."
    )
    preview.add_argument("expression", help='e.g. "*/5 * * * *"')
    preview.add_argument("--tz", default="UTC", help="IANA time zone.")
    preview.add_argument(
        "--kind", default="cron", choices=["cron", "quartz", "interval", "once"]
    )
    preview.add_argument(
        "-n", type=_count(1000), default=10, help="How many (1-1000, default 10)."
    )
    preview.set_defaults(handler=preview_command)
    return parser


# --- Commands ------------------------------------------------------------------------


def jobs_list_command(client: Client, args: argparse.Namespace) -> int:
    jobs = _all(client, "jobs/", app=args.app)
    if args.json:
        output.as_json(jobs)
        return 0
    rows = [
        {
            **job,
            # As the server counts it: enabled schedules of an enabled job.
            "next_run": min(
                (
                    s["next_run_at"]
                    for s in job["schedules"]
                    if s["next_run_at"] and s["enabled"] and job["enabled"]
                ),
                default=None,
            ),
            "runs": f"{job['stats']['success_count']}/{job['stats']['error_count']}",
        }
        for job in jobs
    ]
    output.table(
        rows, ["id", "app", "name", "kind", "enabled", "queue", "next_run", "runs"]
    )
    return 0


def run_command(client: Client, args: argparse.Namespace) -> int:
    job = _find_job(client, args.job)
    parameters: dict[str, str] = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"--param {item!r}: use NAME=VALUE.", 2)
        parameters[name] = value
    execution = client.post(f"jobs/{job['id']}/run/", {"parameters": parameters})
    if not (args.wait or args.follow):
        if args.json:
            output.as_json(execution)
        else:
            output.write(f"Execution {execution['id']} of {_job_label(job)}: pending\n")
        return 0
    if args.follow:
        # With --json, stdout is for the JSON alone.
        stream = sys.stderr if args.json else None
        for event in client.log_events(execution["id"]):
            if event["event"] == "output":
                output.write(event["text"], stream=stream)
    final = _wait(client, execution["id"])
    if args.json:
        output.as_json(final)
    elif not args.follow or final["status"] != "succeeded":
        output.write(
            f"Execution {final['id']} {final['status']}"
            + (
                f" (exit code {final['exit_code']})"
                if final["exit_code"] is not None
                else ""
            )
            + (f": {final['reason']}" if final.get("reason") else "")
            + "\n",
            stream=sys.stderr,
        )
    return _exit_code(final, kind=job["kind"])


def executions_list_command(client: Client, args: argparse.Namespace) -> int:
    job_id = _find_job(client, args.job)["id"] if args.job else None
    page = client.get(
        "executions/",
        job=job_id,
        app=args.app,
        status=args.status,
        page_size=args.limit,
    )
    executions = page["results"]
    if args.json:
        output.as_json(executions)
        return 0
    rows = [{**e, "job": f"{e['app']}/{e['job_name']}"} for e in executions]
    output.table(
        rows,
        ["id", "job", "status", "trigger", "exit_code", "started_at", "duration"],
    )
    return 0


def control_command(client: Client, args: argparse.Namespace) -> int:
    execution = client.post(f"executions/{args.execution}/{args.verb}/")
    if args.json:
        output.as_json(execution)
    else:
        output.write(
            f"Execution {execution['id']}: asked to {args.verb} "
            f"(status {execution['status']}, desired {execution['desired_state']})\n"
        )
    return 0


def agents_command(client: Client, args: argparse.Namespace) -> int:
    agents = _all(client, "agents/")
    if args.json:
        output.as_json(agents)
        return 0
    output.table(
        agents, ["id", "name", "status", "alive", "host", "queues", "last_heartbeat"]
    )
    return 0


def preview_command(client: Client, args: argparse.Namespace) -> int:
    answer = client.get(
        "schedules/preview/",
        expression=args.expression,
        timezone=args.tz,
        kind=args.kind,
        n=args.n,
    )
    if args.json:
        output.as_json(answer)
        return 0
    output.write(f"{answer['description']}\n")  # it names the time zone
    output.write("".join(f"  {moment}\n" for moment in answer["fire_times"]))
    return 0


# --- Helpers -------------------------------------------------------------------------


def _all(client: Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every row of a limit/offset-paginated list."""
    rows: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = client.get(path, limit=200, offset=offset, **params)
        if isinstance(page, list):
            return page
        rows.extend(page["results"])
        if not page.get("next"):
            return rows
        offset += len(page["results"])


def _job_label(job: dict[str, Any]) -> str:
    return f"{job['app']}/{job['name']}"


def _find_job(client: Client, ref: str) -> dict[str, Any]:
    if ref.isdigit():
        job: dict[str, Any] = client.get(f"jobs/{ref}/")
        return job
    app, _, name = ref.rpartition("/")
    matches = [
        job
        for job in _all(client, "jobs/", search=name, app=app or None)
        if job["name"] == name
    ]
    if not matches:
        raise CliError(f"No job named {ref!r}.")
    if len(matches) > 1:
        options = ", ".join(_job_label(job) for job in matches)
        raise CliError(f"{ref!r} is ambiguous: use app/name ({options}).", 2)
    return matches[0]


def _wait(client: Client, execution_id: int) -> dict[str, Any]:
    while True:
        execution: dict[str, Any] = client.get(f"executions/{execution_id}/")
        if execution["status"] in _FINAL:
            return execution
        time.sleep(_POLL_SECONDS)


def _exit_code(execution: dict[str, Any], *, kind: str) -> int:
    """0 if the run succeeded, else never 0. Only a shell command's or an external
    process's exit_code is a process's exit code (an http run's is its HTTP status),
    and a 32-bit one such as 256 is 0 once cut to the 8 bits a process exits with.
    A process killed by signal N has the exit_code -N (Python's returncode): 128 + N,
    as shells say (-15 cut to 8 bits would be 241)."""
    if execution["status"] == "succeeded":
        return 0
    code = execution["exit_code"]
    if kind in ("shell", "external") and code is not None:
        code = int(code)
        if -128 < code < 0:
            return 128 - code
        return code & 0xFF or 1
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler: Callable[[Client, argparse.Namespace], int] = args.handler
    client: Client | None = None
    try:
        settings = load_settings(url=args.url, token=args.token, profile=args.profile)
        client = Client(settings)
        return handler(client, args)
    except (KeyError, TypeError, AttributeError, IndexError):
        # The commands read Karmchari's answers as they are documented: JSON of
        # another shape (null, a list, {}, an empty body) comes from something else.
        if client is None or client.last_url is None:
            raise
        logger.debug("unexpected answer from %s", client.last_url, exc_info=True)
        output.error(
            f"Unexpected answer from {client.last_url}: is it Karmchari's URL?"
        )
        return 1
    except CliError as exc:
        output.error(str(exc))
        return exc.code
    except KeyboardInterrupt:
        output.error("interrupted")
        return 130
