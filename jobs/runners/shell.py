"""Shell jobs: `/bin/sh -c <command>` in a session of its own.

The job's session is the unit of control: a timeout, kill and pause signal every
process group in it (the shell's, and any a command made for itself, as `timeout(1)`
does), and when the command ends, whatever it left running in the background is
stopped too, so a job never leaks processes onto the worker host. Only a process
that starts a session of its own (a daemon) leaves the job.

With the worker running as root, `user` runs the command as that user (its groups,
`HOME`, `USER` and `LOGNAME`); a worker that is not root may name only itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import selectors
import shlex
import signal
import subprocess
import time
from pathlib import PurePath, PurePosixPath
from typing import Any

from django.conf import settings

from jobs.runners import ENV_NAME, Outcome, RunContext, SpecError, tail_text

logger = logging.getLogger(__name__)

_READ_SIZE = 65536
# Seconds to keep reading output after the command has exited.
_DRAIN_SECONDS = 2.0
# Seconds between looks at the operator's desired state while a job runs: it bounds
# how long a pause, resume or kill waits for the loop (the control-latency budget is
# 50 ms at p99, DESIGN.md). Each look is a non-blocking read or two: cheap.
_TICK = 0.02
# With an allow-list, these would let a command run something the prefix does not say.
_SHELL_CONTROL = re.compile(r"[;&|`<>\n]|\$\(")
# ... and these in the words the prefix names: what they expand to is not the prefix.
_EXPANDING = re.compile(r"[$*?\[\]{}~]")
# A user name as useradd(8) takes it.
_USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?", re.IGNORECASE)


def command_allowed(command: str) -> str | None:
    """None if KARMCHARI_SHELL_ALLOWED_COMMANDS admits the command, else why not.

    A prefix admits the command itself and the command followed by arguments. With an
    allow-list set, shell control operators (`;`, `&&`, `|`, redirections, command
    substitution) are refused too, or `allowed-cmd; anything` would pass. So are, in
    the words the prefix spans (as the shell reads them: quotes and escapes undone),
    `..` path segments, variables and globs, or
    `/opt/jobs/../../bin/sh` would pass the prefix `/opt/jobs/`.
    """
    prefixes: list[str] = settings.KARMCHARI_SHELL_ALLOWED_COMMANDS
    if not prefixes:
        return None
    stripped = command.strip()
    if _SHELL_CONTROL.search(stripped):
        return "Shell operators (; & | < > ` $( and newlines) are not allowed here."
    try:
        words = shlex.split(stripped)
    except ValueError as exc:
        return f"The command cannot be parsed: {exc}."
    for prefix in prefixes:
        if stripped == prefix or stripped.startswith(
            prefix if prefix.endswith((" ", "/")) else prefix + " "
        ):
            spanned = words[: max(1, len(prefix.split()))]
            for word in spanned:
                if ".." in PurePosixPath(word).parts or _EXPANDING.search(word):
                    return (
                        f"{word!r} may run something its allowed prefix does not "
                        "name: no '..', variables or globs there."
                    )
            return None
    return "The command does not start with an allowed prefix."


class TailBuffer:
    """Keeps the last `limit` bytes written, and how many were dropped before them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.dropped = 0
        self._data = bytearray()

    def write(self, chunk: bytes) -> None:
        self._data += chunk
        # Trim in batches so a chatty job costs amortised O(1) per byte.
        if len(self._data) > 2 * self.limit:
            cut = len(self._data) - self.limit
            self.dropped += cut
            del self._data[:cut]

    def text(self) -> str:
        data = self._data
        dropped = self.dropped
        if len(data) > self.limit:
            dropped += len(data) - self.limit
            data = data[-self.limit :]
        return tail_text(bytes(data), dropped)


class ShellRunner:
    def validate(self, spec: Any) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise SpecError({"spec": "Must be an object with a 'command'."})
        errors: dict[str, str] = {}
        unknown = sorted(set(spec) - {"command", "cwd", "env", "user"})
        if unknown:
            errors["spec"] = f"Unknown keys for a shell job: {', '.join(unknown)}."
        command = spec.get("command")
        if not isinstance(command, str) or not command.strip():
            errors["command"] = "A shell job needs a non-empty command string."
        elif "\x00" in command:
            errors["command"] = "The command contains a NUL byte."
        elif refused := command_allowed(command):
            errors["command"] = refused
        cwd = spec.get("cwd", "")
        if not isinstance(cwd, str):
            errors["cwd"] = "Must be a string path."
        elif cwd and not PurePath(cwd).is_absolute():
            errors["cwd"] = f"Must be an absolute path, not {cwd!r}."
        user = spec.get("user", "")
        if not isinstance(user, str) or (user and not _USER_NAME.fullmatch(user)):
            errors["user"] = "Must be a user name, such as 'nobody'."
        env = spec.get("env", {})
        if not isinstance(env, dict):
            errors["env"] = "Must be an object of NAME: value strings."
        else:
            for name, value in env.items():
                if not isinstance(name, str) or not ENV_NAME.match(name):
                    errors["env"] = f"{name!r} is not a valid variable name."
                    break
                if not isinstance(value, str):
                    errors["env"] = f"The value of {name} must be a string."
                    break
        if errors:
            raise SpecError(errors)
        cleaned: dict[str, Any] = {"command": command}
        if cwd:
            cleaned["cwd"] = cwd
        if env:
            cleaned["env"] = env
        if user:
            cleaned["user"] = user
        return cleaned

    def run(self, spec: dict[str, Any], context: RunContext) -> Outcome:
        env = {
            name: os.environ[name]
            for name in settings.KARMCHARI_SHELL_INHERIT_ENV
            if name in os.environ
        }
        env.setdefault("PATH", os.defpath)
        env.update(spec.get("env", {}))
        env.update(context.secrets)
        env["KARMCHARI_EXECUTION_ID"] = str(context.execution_id)
        env["KARMCHARI_JOB"] = context.job_name
        env["KARMCHARI_APP"] = context.app_name
        # The allow-list may have changed since the job was saved.
        if refused := command_allowed(spec["command"]):
            return Outcome(status="failed", reason=f"Command refused: {refused}")
        run_as: dict[str, Any] = {}
        if spec.get("user"):
            try:
                run_as = _run_as(spec["user"], env)
            except ValueError as exc:
                return Outcome(status="failed", reason=str(exc))
        try:
            process = subprocess.Popen(
                ["/bin/sh", "-c", spec["command"]],
                cwd=spec.get("cwd") or None,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                **run_as,
            )
        except OSError as exc:
            return Outcome(status="failed", reason=f"Could not start: {exc}")
        context.on_start(process.pid)
        return _supervise(process, context)


def _run_as(name: str, env: dict[str, str]) -> dict[str, Any]:
    """Popen's arguments to run as user `name` (and its environment set for it)."""
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        raise ValueError(f"No user {name!r} on this worker.") from None
    if account.pw_uid == os.geteuid():
        return {}
    if os.geteuid() != 0:
        raise ValueError(
            f"Cannot run as {name!r}: this worker does not run as root "
            f"(it runs as uid {os.geteuid()})."
        )
    env.update(HOME=account.pw_dir, USER=name, LOGNAME=name)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _signal_group(sid: int, sig: signal.Signals) -> None:
    """Signal every process group of the job's session `sid` (its leader's pid).
    Where /proc cannot be read, only the leader's group."""
    groups = {sid}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):  # noqa: PTH208 (no Path per process)
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.getsid(int(entry)) == sid:
                        groups.add(os.getpgid(int(entry)))
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)


def _supervise(process: subprocess.Popen[bytes], context: RunContext) -> Outcome:
    """Read output, enforce the timeout and act on the operator's desired state.

    Paused time does not count against the timeout: the deadline moves on by however
    long the group was stopped.
    """
    limit = settings.KARMCHARI_OUTPUT_LIMIT
    grace = settings.KARMCHARI_KILL_GRACE
    timeout = context.timeout
    assert process.stdout is not None and process.stderr is not None
    buffers = {
        process.stdout.fileno(): TailBuffer(limit),
        process.stderr.fileno(): TailBuffer(limit),
    }
    out, err = buffers[process.stdout.fileno()], buffers[process.stderr.fileno()]
    session = process.pid
    deadline = time.monotonic() + timeout if timeout else None
    kill_at: float | None = None
    timed_out = False
    killed = False
    paused_since: float | None = None
    paused_total = 0.0
    exited_at: float | None = None

    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        selector.register(process.stderr, selectors.EVENT_READ)
        while True:
            if selector.get_map():
                events = selector.select(timeout=_TICK)
            else:
                # Both pipes closed: the command is exiting (its pipes close just
                # before it can be reaped), or it left only background work. Wait
                # for the exit itself, rather than a whole tick of select().
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=_TICK)
                events = []
            for key, _ in events:
                chunk = os.read(key.fd, _READ_SIZE)
                if chunk:
                    buffers[key.fd].write(chunk)
                    context.on_output(chunk)
                else:
                    selector.unregister(key.fileobj)
            now = time.monotonic()
            if process.poll() is not None:
                if exited_at is None:
                    # The command is done; stop what it left in the background so
                    # the pipes close and nothing outlives the job.
                    _signal_group(session, signal.SIGKILL)
                    exited_at = now
                    if paused_since is not None:
                        paused_total += now - paused_since
                        paused_since = None
                # A grandchild that left the group may hold a pipe open forever.
                if not selector.get_map() or now - exited_at > _DRAIN_SECONDS:
                    break
                continue
            desired = context.poll()
            if desired == "kill" and not killed and not timed_out:
                killed = True
                logger.info("job session %s: kill requested; sending SIGTERM", session)
                _signal_group(session, signal.SIGTERM)
                # A stopped process only sees SIGTERM once it is continued; from
                # here it runs (its handler), so the grace is not paused time.
                _signal_group(session, signal.SIGCONT)
                kill_at = now + grace
                if paused_since is not None:
                    paused_total += now - paused_since
                    paused_since = None
                    context.on_status("running", paused_total)
            elif killed or timed_out:
                pass
            elif desired == "pause" and paused_since is None:
                logger.info("job session %s: pausing (SIGSTOP)", session)
                _signal_group(session, signal.SIGSTOP)
                paused_since = now
                context.on_status("paused", paused_total)
            elif desired == "run" and paused_since is not None:
                logger.info("job session %s: resuming (SIGCONT)", session)
                _signal_group(session, signal.SIGCONT)
                paused_total += now - paused_since
                if deadline is not None:
                    deadline += now - paused_since
                paused_since = None
                context.on_status("running", paused_total)
            if (
                deadline is not None
                and paused_since is None
                and not (timed_out or killed)
                and now >= deadline
            ):
                timed_out = True
                logger.info("job session %s timed out; sending SIGTERM", session)
                _signal_group(session, signal.SIGTERM)
                kill_at = now + grace
            if kill_at is not None and now >= kill_at:
                logger.info("job session %s: grace over; sending SIGKILL", session)
                _signal_group(session, signal.SIGKILL)
                kill_at = None
    process.stdout.close()
    process.stderr.close()
    code = process.wait()

    common: dict[str, Any] = {
        "exit_code": code,
        "output": out.text(),
        "error": err.text(),
        "paused_seconds": paused_total,
    }
    if killed:
        how = "SIGKILL after the grace period" if code == -signal.SIGKILL else "SIGTERM"
        return Outcome(status="killed", reason=f"Killed on request ({how}).", **common)
    if timed_out:
        return Outcome(
            status="timed_out", reason=f"Timed out after {timeout:g}s.", **common
        )
    if code == 0:
        return Outcome(status="succeeded", **common)
    reason = (
        f"Killed by signal {_signal_name(-code)}."
        if code < 0
        else f"Exited with code {code}."
    )
    return Outcome(status="failed", reason=reason, **common)
