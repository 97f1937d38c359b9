"""Host facts and load samples, read with psutil; no ORM, no Redis.

A `Sample` is what one heartbeat publishes. It travels as JSON (the live value in
Redis) and as a compact array (one point of the last-hour history), and both are
parsed back tolerantly: a value written by another version or garbled in transit
reads as None instead of breaking a page.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostFacts:
    """What does not change while a worker runs."""

    host: str
    os_name: str
    os_version: str
    cpu_arch: str
    cpu_cores: int | None
    memory_total: int
    swap_total: int
    pid: int
    version: str


def host_facts() -> HostFacts:
    return HostFacts(
        host=socket.gethostname(),
        os_name=platform.system(),
        os_version=platform.release(),
        cpu_arch=platform.machine(),
        cpu_cores=psutil.cpu_count(logical=True),
        memory_total=psutil.virtual_memory().total,
        swap_total=psutil.swap_memory().total,
        pid=os.getpid(),
        version=software_version(),
    )


@cache
def software_version() -> str:
    try:
        return metadata.version("karmchari")
    except metadata.PackageNotFoundError:
        pass
    # Run from a checkout (the usual case): the version is in pyproject.toml.
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        with pyproject.open("rb") as file:
            return str(tomllib.load(file)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


@dataclass(frozen=True)
class Sample:
    """One heartbeat's worth of load. CPU loads are fractions of all cores (0 to 1)."""

    at: float  # Unix time of the sample.
    memory_total: int
    memory_free: int
    swap_total: int
    swap_free: int
    process_cpu_load: float | None  # None on the first sample: no interval yet.
    cpu_time: float  # Seconds used by the worker process tree so far.
    system_cpu_load: float | None
    load_average: list[float] = field(default_factory=list)
    running: list[int] = field(default_factory=list)  # Execution ids.

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> Sample | None:
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return cls(
                at=float(data["at"]),
                memory_total=int(data["memory_total"]),
                memory_free=int(data["memory_free"]),
                swap_total=int(data["swap_total"]),
                swap_free=int(data["swap_free"]),
                process_cpu_load=_float_or_none(data.get("process_cpu_load")),
                cpu_time=float(data["cpu_time"]),
                system_cpu_load=_float_or_none(data.get("system_cpu_load")),
                load_average=[float(x) for x in data.get("load_average") or []],
                running=[int(x) for x in data.get("running") or []],
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            logger.warning("unreadable agent sample: %.200r", raw)
            return None

    def to_point(self) -> str:
        """The compact history form: about 60 bytes for an hour of 720 beats."""
        return json.dumps(
            [
                round(self.at, 1),
                self.memory_free,
                self.swap_free,
                _round(self.process_cpu_load),
                _round(self.system_cpu_load),
                self.load_average[0] if self.load_average else None,
                len(self.running),
            ],
            separators=(",", ":"),
        )


@dataclass(frozen=True)
class Point:
    """One point of the stats history (see Sample.to_point)."""

    at: float
    memory_free: int
    swap_free: int
    process_cpu_load: float | None
    system_cpu_load: float | None
    load1: float | None
    running: int

    @classmethod
    def parse(cls, raw: str | bytes) -> Point | None:
        try:
            at, memory, swap, process, system, load1, running = json.loads(raw)
            return cls(
                at=float(at),
                memory_free=int(memory),
                swap_free=int(swap),
                process_cpu_load=_float_or_none(process),
                system_cpu_load=_float_or_none(system),
                load1=_float_or_none(load1),
                running=int(running),
            )
        except (ValueError, TypeError):
            return None


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def busy_fraction(before: Any, after: Any) -> float | None:
    """System CPU load between two psutil.cpu_times() readings, 0 to 1.

    Idle and iowait count as not busy. None when no time passed (or the counters
    went backwards, as they can after a suspend).
    """
    total = sum(after) - sum(before)
    # On Linux `user` already holds `guest`, and `nice` holds `guest_nice`, as
    # psutil.cpu_percent accounts for: counted once.
    for name in ("guest", "guest_nice"):
        total -= getattr(after, name, 0.0) - getattr(before, name, 0.0)
    if total <= 0:
        return None
    idle = (after.idle - before.idle) + (
        getattr(after, "iowait", 0.0) - getattr(before, "iowait", 0.0)
    )
    return float(min(1.0, max(0.0, (total - idle) / total)))


def tree_cpu_time(process: psutil.Process) -> float:
    """CPU seconds of a process and all its descendants, living and reaped.

    A reaped child's time is folded into its parent's children_* counters, so the sum
    stays (nearly) monotonic as pool processes and job subprocesses come and go.
    """
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        try:
            times = member.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        total += times.user + times.system + times.children_user
        total += times.children_system
    return total


class Sampler:
    """Takes Samples of this host and of one process tree (the worker's).

    Loads are rates, so each sample is measured against the previous one; the first
    has no process or system load yet.
    """

    def __init__(
        self,
        process: psutil.Process | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.process = process or psutil.Process()
        self.clock = clock
        self.monotonic = monotonic
        self.cores = psutil.cpu_count(logical=True) or 1
        self._last: tuple[float, float, Any] | None = None

    def sample(self, *, running: Iterable[int] = ()) -> Sample:
        memory = psutil.virtual_memory()
        swap = psutil.swap_memory()
        now = self.monotonic()
        cpu_time = tree_cpu_time(self.process)
        cpu_times = psutil.cpu_times()
        process_load = system_load = None
        if self._last is not None:
            last_now, last_cpu_time, last_cpu_times = self._last
            elapsed = now - last_now
            if elapsed > 0:
                used = max(0.0, cpu_time - last_cpu_time)
                process_load = min(1.0, used / (elapsed * self.cores))
            system_load = busy_fraction(last_cpu_times, cpu_times)
        self._last = (now, cpu_time, cpu_times)
        try:
            load_average = [round(x, 2) for x in psutil.getloadavg()]
        except (AttributeError, OSError):
            load_average = []
        return Sample(
            at=self.clock(),
            memory_total=memory.total,
            memory_free=memory.available,
            swap_total=swap.total,
            swap_free=swap.free,
            process_cpu_load=process_load,
            cpu_time=round(cpu_time, 3),
            system_cpu_load=system_load,
            load_average=load_average,
            running=sorted(set(running)),
        )
