"""Shell jobs: `/bin/sh -c <command>` in its own process group.

The job's process group is the unit of control: a timeout (and, later, kill and pause)
signals the whole group, and when the command ends, whatever it left running in the
background is stopped too, so a job never leaks processes onto the worker host.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import signal
import subprocess
import time
from pathlib import PurePath
from typing import Any

from django.conf import settings

from jobs.runners import Outcome, RunContext, SpecError

logger = logging.getLogger(__name__)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_READ_SIZE = 65536
# Seconds to keep reading output after the command has exited.
_DRAIN_SECONDS = 2.0


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
        body = bytes(data).decode("utf-8", errors="replace")
        if dropped:
            return f"[... {dropped} bytes truncated ...]\n{body}"
        return body


class ShellRunner:
    def validate(self, spec: Any) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise SpecError({"spec": "Must be an object with a 'command'."})
        errors: dict[str, str] = {}
        unknown = sorted(set(spec) - {"command", "cwd", "env"})
        if unknown:
            errors["spec"] = f"Unknown keys for a shell job: {', '.join(unknown)}."
        command = spec.get("command")
        if not isinstance(command, str) or not command.strip():
            errors["command"] = "A shell job needs a non-empty command string."
        elif "\x00" in command:
            errors["command"] = "The command contains a NUL byte."
        cwd = spec.get("cwd", "")
        if not isinstance(cwd, str):
            errors["cwd"] = "Must be a string path."
        elif cwd and not PurePath(cwd).is_absolute():
            errors["cwd"] = f"Must be an absolute path, not {cwd!r}."
        env = spec.get("env", {})
        if not isinstance(env, dict):
            errors["env"] = "Must be an object of NAME: value strings."
        else:
            for name, value in env.items():
                if not _ENV_NAME.match(name):
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
        return cleaned

    def run(self, spec: dict[str, Any], context: RunContext) -> Outcome:
        env = {
            name: os.environ[name]
            for name in settings.KARMCHARI_SHELL_INHERIT_ENV
            if name in os.environ
        }
        env.setdefault("PATH", os.defpath)
        env.update(spec.get("env", {}))
        env["KARMCHARI_EXECUTION_ID"] = str(context.execution_id)
        env["KARMCHARI_JOB"] = context.job_name
        env["KARMCHARI_APP"] = context.app_name
        try:
            process = subprocess.Popen(
                ["/bin/sh", "-c", spec["command"]],
                cwd=spec.get("cwd") or None,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            return Outcome(status="failed", reason=f"Could not start: {exc}")
        context.on_start(process.pid)
        return _supervise(process, context.timeout)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _supervise(process: subprocess.Popen[bytes], timeout: float | None) -> Outcome:
    limit = settings.KARMCHARI_OUTPUT_LIMIT
    grace = settings.KARMCHARI_KILL_GRACE
    assert process.stdout is not None and process.stderr is not None
    buffers = {
        process.stdout.fileno(): TailBuffer(limit),
        process.stderr.fileno(): TailBuffer(limit),
    }
    out, err = buffers[process.stdout.fileno()], buffers[process.stderr.fileno()]
    pgid = process.pid
    deadline = time.monotonic() + timeout if timeout else None
    kill_at: float | None = None
    timed_out = False
    exited_at: float | None = None

    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        selector.register(process.stderr, selectors.EVENT_READ)
        while True:
            # With nothing registered (both pipes closed), select() just waits.
            for key, _ in selector.select(timeout=0.1):
                chunk = os.read(key.fd, _READ_SIZE)
                if chunk:
                    buffers[key.fd].write(chunk)
                else:
                    selector.unregister(key.fileobj)
            now = time.monotonic()
            if process.poll() is not None:
                if exited_at is None:
                    # The command is done; stop what it left in the background so
                    # the pipes close and nothing outlives the job.
                    _signal_group(pgid, signal.SIGKILL)
                    exited_at = now
                # A grandchild that left the group may hold a pipe open forever.
                if not selector.get_map() or now - exited_at > _DRAIN_SECONDS:
                    break
                continue
            if deadline is not None and not timed_out and now >= deadline:
                timed_out = True
                logger.info("process group %s timed out; sending SIGTERM", pgid)
                _signal_group(pgid, signal.SIGTERM)
                kill_at = now + grace
            if kill_at is not None and now >= kill_at:
                _signal_group(pgid, signal.SIGKILL)
                kill_at = None
    process.stdout.close()
    process.stderr.close()
    code = process.wait()

    if timed_out:
        return Outcome(
            status="timed_out",
            exit_code=code,
            output=out.text(),
            error=err.text(),
            reason=f"Timed out after {timeout:g}s.",
        )
    if code == 0:
        return Outcome(
            status="succeeded", exit_code=0, output=out.text(), error=err.text()
        )
    reason = (
        f"Killed by signal {_signal_name(-code)}."
        if code < 0
        else f"Exited with code {code}."
    )
    return Outcome(
        status="failed",
        exit_code=code,
        output=out.text(),
        error=err.text(),
        reason=reason,
    )
