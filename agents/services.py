"""Every write to agents: registration, heartbeats, liveness, drain and resume.

Celery signal receivers (agents/worker.py), the API and the admin call these; nothing
else writes an Agent row.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Func
from django.db.models.functions import Now
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from agents import live
from agents.models import Agent
from agents.signals import agent_went_offline
from agents.stats import HostFacts, Sample

logger = logging.getLogger(__name__)

CONTROL_TIMEOUT = 2.0


class AgentError(Exception):
    """A request about an agent that cannot be carried out now."""


class AgentConflict(AgentError):
    """The agent's state forbids the action (answered as 409)."""


class AgentUnreachable(AgentError):
    """The worker did not answer a remote-control command (answered as 503)."""


class AgentNameTaken(AgentConflict):
    """Another live worker holds the name: taking its row would flap between them."""


class AgentGone(AgentError):
    """The agent's row was deleted or taken over by another instance."""


def _database_now() -> datetime | Func:
    """Now on the database's clock, for the heartbeat stamps every judge reads.

    Workers' clocks may be minutes off (a host without NTP): a stamp from one an hour
    ahead would keep a dead worker "alive" for an hour. SQLite is a file on this
    host, so there the database's clock is this process's.
    """
    return timezone.now() if connection.vendor == "sqlite" else Now()


def agent_register(
    *,
    name: str,
    instance_id: uuid.UUID,
    facts: HostFacts,
    queues: Iterable[str],
    started_at: datetime | None = None,
) -> Agent:
    """Record a starting worker as online, taking over the row of its name.

    A worker restarted under the same name (kill -9, then systemd starts it again)
    may beat the liveness sweep: the previous instance is marked offline first, so its
    running executions are recovered before this one consumes anything.
    """
    now = timezone.now()
    fields: dict[str, Any] = {
        "instance_id": instance_id,
        "host": facts.host,
        "os_name": facts.os_name,
        "os_version": facts.os_version,
        "cpu_arch": facts.cpu_arch,
        "cpu_cores": facts.cpu_cores,
        "memory_total": facts.memory_total,
        "swap_total": facts.swap_total,
        "pid": facts.pid,
        "version": facts.version[:50],
        "queues": sorted(set(queues)),
        "status": Agent.Status.ONLINE,
        "started_at": started_at or now,
        "last_heartbeat": _database_now(),
        # Load figures of a previous instance would be lies about this one.
        "memory_free": None,
        "swap_free": None,
        "process_cpu_load": None,
        "system_cpu_load": None,
        "cpu_time": None,
        "load_average": [],
        "running": [],
    }
    for _ in range(2):
        previous = Agent.objects.filter(name=name).first()
        if previous is None:
            try:
                with transaction.atomic():
                    agent = Agent.objects.create(name=name, **fields)
            except IntegrityError:
                continue  # Another process registered this name meanwhile.
            if not isinstance(agent.last_heartbeat, datetime):
                agent.refresh_from_db(fields=["last_heartbeat"])
            logger.info("agent %s registered (%s)", name, instance_id)
            return agent
        if previous.instance_id != instance_id and previous.status != (
            Agent.Status.OFFLINE
        ):
            if _still_running(previous, facts=facts):
                raise AgentNameTaken(
                    f"Agent name {name!r} is in use by a live worker on host "
                    f"{previous.host!r} (pid {previous.pid}). Give each worker its "
                    "own name (celery worker -n); this one consumes nothing until "
                    "the name is free."
                )
            logger.warning(
                "agent %s: instance %s replaces %s, which never said goodbye",
                name,
                instance_id,
                previous.instance_id,
            )
            _go_offline(
                agent=copy.copy(previous),
                reason="Its worker restarted without stopping.",
            )
        if previous.drained:
            # An operator drained it; a restart does not undo that (the worker
            # cancels its consumers as it becomes ready: agents/worker.py).
            fields["status"] = Agent.Status.DRAINING
        for field, value in fields.items():
            setattr(previous, field, value)
        previous.save(update_fields=list(fields))
        if not isinstance(previous.last_heartbeat, datetime):
            previous.refresh_from_db(fields=["last_heartbeat"])
        logger.info("agent %s registered again (%s)", name, instance_id)
        return previous
    raise AgentConflict(f"Agent {name!r} is being registered by another process.")


def agent_heartbeat(*, agent: Agent, sample: Sample, persist: bool) -> Agent:
    """Publish a sample to Redis; also save it to the row when asked or Redis fails.

    Raises AgentGone when the row was deleted or taken over by another instance, so
    the caller registers again.
    """
    published = live.publish(instance_id=agent.instance_id, sample=sample)
    if not (persist or not published):
        return agent
    stats: dict[str, Any] = {
        "last_heartbeat": _database_now(),
        "memory_free": sample.memory_free,
        "swap_free": sample.swap_free,
        "process_cpu_load": sample.process_cpu_load,
        "system_cpu_load": sample.system_cpu_load,
        "cpu_time": sample.cpu_time,
        "load_average": sample.load_average,
        "running": sample.running,
    }
    mine = Agent.objects.filter(pk=agent.pk, instance_id=agent.instance_id)
    if not mine.update(**stats):
        raise AgentGone(f"Agent {agent.name!r} ({agent.instance_id}) has no row.")
    for field, value in stats.items():
        setattr(agent, field, value)
    if not isinstance(agent.last_heartbeat, datetime):
        agent.refresh_from_db(fields=["last_heartbeat"])
    offline = mine.filter(status=Agent.Status.OFFLINE)
    # Back as it was: a drained worker still consumes nothing.
    revived = None
    if offline.filter(drained=True).update(status=Agent.Status.DRAINING):
        revived = Agent.Status.DRAINING
    elif offline.update(status=Agent.Status.ONLINE):
        revived = Agent.Status.ONLINE
    if revived is not None:
        # Swept while alive (a long pause, or Redis and the database both away): its
        # executions were already given up as lost; finishing them is refused.
        logger.warning("agent %s was marked offline but is alive again", agent.name)
        agent.status = revived
    return agent


def agent_mark_offline(*, agent: Agent, reason: str) -> Agent:
    """Mark this instance of the agent offline (a clean shutdown, or an operator)."""
    _go_offline(agent=agent, reason=reason)
    agent.status = Agent.Status.OFFLINE
    live.forget(agent.instance_id)
    return agent


def _go_offline(
    *, agent: Agent, reason: str, unless_heard_by: datetime | None = None
) -> bool:
    """Offline + agent_went_offline in one transaction; False if already offline.

    The instance_id condition keeps a late sweep from hitting a new instance that has
    just taken the row over. `unless_heard_by`: the sweep's "now"; the agent is judged
    again with its row locked, on its saved and live stamps read afresh, so a
    heartbeat that came in after the sweep read them keeps it online (its running
    executions would otherwise be given up as lost while it still runs them). A
    heartbeat publishes to Redis before it saves the row: one that waits on the lock
    was too late either way.
    """
    with transaction.atomic():
        mine = Agent.objects.filter(pk=agent.pk, instance_id=agent.instance_id).exclude(
            status=Agent.Status.OFFLINE
        )
        if unless_heard_by is not None:
            row = mine.select_for_update().only("last_heartbeat").first()
            if row is None:
                return False
            sample = live.read_one(agent.instance_id, now=unless_heard_by.timestamp())
            if _heard_from(row, sample=sample, now=unless_heard_by):
                logger.info("agent %s: heard from again; stays online", agent.name)
                return False
        changed = mine.update(status=Agent.Status.OFFLINE)
        if changed:
            logger.warning("agent %s is offline: %s", agent.name, reason)
            agent_went_offline.send(sender=Agent, agent=agent, reason=reason)
    return bool(changed)


def _heard_from(agent: Agent, *, sample: Sample | None, now: datetime) -> bool:
    """Within the window by its live stamp, or by its saved row if Redis has none.

    No live stamp at all: Redis may have lost it (a restart), and the saved row is
    only written every KARMCHARI_AGENT_DB_SECONDS. Declaring a live worker dead would
    run its jobs twice, so the row gets its own delay on top of the window.
    """
    seen_at = datetime.fromtimestamp(sample.at, tz=UTC) if sample else None
    if agent.is_fresh(now=now, seen_at=seen_at):
        return True
    db_allowance = timedelta(
        seconds=settings.KARMCHARI_AGENT_WINDOW_SECONDS
        + settings.KARMCHARI_AGENT_DB_SECONDS
    )
    return (
        sample is None
        and agent.last_heartbeat is not None
        and agent.last_heartbeat >= now - db_allowance
    )


def _still_running(previous: Agent, *, facts: HostFacts) -> bool:
    """Whether the row's instance is alive: a second worker under the same name.

    On this host its process tells (a restart after kill -9 finds it gone, or its pid
    taken by this very worker in a new container); elsewhere only its heartbeats do,
    so a worker moved to another host waits out the window before taking over.
    """
    if previous.host == facts.host and (
        previous.pid is None
        or previous.pid == facts.pid
        or not psutil.pid_exists(previous.pid)
    ):
        return False
    return _heard_from(
        previous, sample=live.read_one(previous.instance_id), now=timezone.now()
    )


def agents_sweep_stale(*, now: datetime | None = None) -> list[Agent]:
    """Mark offline the agents not heard from within the window; return those.

    Meant for every beat tick: one indexed query for agents whose saved heartbeat is
    old (the row is saved only every KARMCHARI_AGENT_DB_SECONDS, so that is most live
    agents), then one MGET of their live stamps in Redis, which clear the living.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.KARMCHARI_AGENT_WINDOW_SECONDS)
    candidates = list(
        Agent.objects.exclude(status=Agent.Status.OFFLINE).filter(
            last_heartbeat__lt=cutoff
        )
    )
    if not candidates:
        return []
    samples = live.read_many(
        (agent.instance_id for agent in candidates), now=now.timestamp()
    )
    went_offline = []
    for agent in candidates:
        sample = samples.get(str(agent.instance_id))
        if _heard_from(agent, sample=sample, now=now):
            continue
        seen_at = datetime.fromtimestamp(sample.at, tz=UTC) if sample else None
        last = seen_at or agent.last_heartbeat
        reason = f"No heartbeat since {last:%Y-%m-%d %H:%M:%S} UTC." if last else ""
        try:
            if _go_offline(
                agent=agent,
                reason=reason or "Never sent a heartbeat.",
                unless_heard_by=now,
            ):
                agent.status = Agent.Status.OFFLINE
                went_offline.append(agent)
        except Exception:
            # A failing receiver rolled the change back: the agent is still online and
            # the next sweep tries again. One bad agent must not stop the others.
            logger.exception("agent %s: going offline failed", agent.name)
    return went_offline


def _control(*, agent: Agent, command: str, timeout: float) -> None:
    from karmchari_site.celery import app

    if not agent.queues:
        raise AgentConflict(f"Agent {agent.name!r} consumes no queues.")
    method = getattr(app.control, command)
    for queue in agent.queues:
        try:
            replies = method(
                queue, destination=[agent.name], reply=True, timeout=timeout
            )
        except (KombuOperationalError, OSError) as error:
            # The broker is down: no worker can be told anything (503, not 500).
            raise AgentUnreachable(
                f"Agent {agent.name!r} cannot be reached: the broker is "
                f"unreachable ({error})."
            ) from error
        answers = [answer for reply in replies or [] for answer in reply.values()]
        if not answers:
            raise AgentUnreachable(
                f"Agent {agent.name!r} did not answer within {timeout:g}s."
            )
        errors = [
            str(a["error"]) for a in answers if isinstance(a, dict) and "error" in a
        ]
        if errors:
            raise AgentConflict(f"Agent {agent.name!r} refused: {'; '.join(errors)}")


def agent_drain(*, agent: Agent, timeout: float = CONTROL_TIMEOUT) -> Agent:
    """Stop the worker taking new work; what it runs now finishes normally."""
    if agent.status == Agent.Status.OFFLINE:
        raise AgentConflict(
            f"Agent {agent.name!r} is offline; there is nothing to drain."
        )
    _control(agent=agent, command="cancel_consumer", timeout=timeout)
    Agent.objects.filter(pk=agent.pk, instance_id=agent.instance_id).exclude(
        status=Agent.Status.OFFLINE
    ).update(status=Agent.Status.DRAINING, drained=True)
    agent.refresh_from_db(fields=["status", "drained"])
    return agent


def agent_resume(*, agent: Agent, timeout: float = CONTROL_TIMEOUT) -> Agent:
    """Let a draining worker consume its queues again."""
    if agent.status == Agent.Status.OFFLINE:
        raise AgentConflict(f"Agent {agent.name!r} is offline; start its worker.")
    _control(agent=agent, command="add_consumer", timeout=timeout)
    Agent.objects.filter(pk=agent.pk, instance_id=agent.instance_id).exclude(
        status=Agent.Status.OFFLINE
    ).update(status=Agent.Status.ONLINE, drained=False)
    agent.refresh_from_db(fields=["status", "drained"])
    return agent


def queues_online() -> set[str]:
    """Queues some online (not draining, not offline) agent consumes.

    For the jobs side's routing warning: a job whose queue is not in here waits.
    """
    queues: set[str] = set()
    for names in Agent.objects.filter(status=Agent.Status.ONLINE).values_list(
        "queues", flat=True
    ):
        queues.update(names or [])
    return queues
