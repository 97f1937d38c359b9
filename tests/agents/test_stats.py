from __future__ import annotations

import os
import platform
from collections import namedtuple

import psutil
import pytest

from agents.stats import Point, Sample, Sampler, busy_fraction, host_facts
from tests.agents.conftest import make_sample

Times = namedtuple("Times", "user system idle iowait")


def test_it_reads_host_facts_of_this_machine() -> None:
    facts = host_facts()
    assert facts.os_name == platform.system()
    assert facts.cpu_arch == platform.machine()
    assert facts.cpu_cores == psutil.cpu_count(logical=True)
    assert facts.memory_total == psutil.virtual_memory().total
    assert facts.pid == os.getpid()
    assert facts.version == "0.1.0"


def test_it_round_trips_a_sample_through_json() -> None:
    sample = make_sample(running=[3, 9], process_cpu_load=None)
    assert Sample.from_json(sample.to_json()) == sample
    assert Sample.from_json(sample.to_json().encode()) == sample


@pytest.mark.parametrize(
    "raw", [None, "", "not json", "[]", '{"at": 1}', '{"at": "x", "cpu_time": 1}']
)
def test_it_reads_garbled_samples_as_none(raw: str | None) -> None:
    assert Sample.from_json(raw) is None


def test_it_parses_compact_history_points() -> None:
    sample = make_sample(at=100.04, running=[1, 2], system_cpu_load=0.123456)
    point = Point.parse(sample.to_point())
    assert point == Point(
        at=100.0,
        memory_free=sample.memory_free,
        swap_free=sample.swap_free,
        process_cpu_load=0.25,
        system_cpu_load=0.1235,
        load1=1.5,
        running=2,
    )
    assert len(sample.to_point()) < 80
    assert Point.parse(b"[1, 2]") is None
    assert Point.parse("garbage") is None


def test_it_computes_system_load_from_cpu_time_deltas() -> None:
    before = Times(user=10.0, system=5.0, idle=80.0, iowait=5.0)
    after = Times(user=13.0, system=6.0, idle=85.0, iowait=6.0)
    # 10 s elapsed across the counters, 6 of them idle or waiting.
    assert busy_fraction(before, after) == pytest.approx(0.4)
    assert busy_fraction(after, after) is None
    assert busy_fraction(after, before) is None


def test_it_measures_load_between_samples() -> None:
    clock = iter([100.0, 110.0])
    sampler = Sampler(monotonic=lambda: next(clock))
    first = sampler.sample(running=[5, 2, 5])
    second = sampler.sample()
    assert first.process_cpu_load is None
    assert first.running == [2, 5]
    assert second.process_cpu_load is not None
    assert 0.0 <= second.process_cpu_load <= 1.0
    assert second.cpu_time >= first.cpu_time > 0
    assert second.memory_total == psutil.virtual_memory().total
    assert len(second.load_average) == 3


def test_it_counts_guest_time_once_in_the_system_load() -> None:
    """Linux counts `guest` inside `user` (and `guest_nice` inside `nice`): a host
    running VMs, 10 s user of which 8 s guest, and 10 s idle, is 50% busy."""
    host = namedtuple("host", "user nice system idle iowait guest guest_nice")
    before = host(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    after = host(10.0, 0.0, 0.0, 10.0, 0.0, 8.0, 0.0)
    assert busy_fraction(before, after) == pytest.approx(0.5)
