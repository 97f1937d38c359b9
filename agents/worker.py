"""The agent inside a Celery worker: register at start, heartbeat, say goodbye.

Everything here runs in the worker's main process. Registration happens at
`celeryd_after_setup`, before the pool forks and before anything is consumed; the
heartbeat thread starts at `worker_ready`, after the pool has forked, so no child
inherits a thread or a half-used connection.

The executions being run are read from the main process's own bookkeeping of the
requests its pool has accepted (`celery.worker.state.active_requests`), which works
for prefork, threads and solo pools alike without importing jobs.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from celery.signals import celeryd_after_setup, worker_ready, worker_shutdown
from django.conf import settings
from django.db import DatabaseError, InterfaceError, close_old_connections, connections
from django.utils import timezone

from agents import services
from agents.models import Agent
from agents.stats import Sampler, host_facts

logger = logging.getLogger(__name__)

RUN_TASK = "jobs.run_execution"


def running_executions(requests: Iterable[Any] | None = None) -> list[int]:
    """Ids of the executions this worker is running now."""
    if requests is None:
        from celery.worker import state

        for _ in range(5):
            try:
                # A WeakSet the consumer changes as tasks start and end.
                requests = list(state.active_requests)
                break
            except RuntimeError:
                continue
        else:
            return []
    ids = set()
    for request in requests:
        if getattr(request, "name", None) != RUN_TASK:
            continue
        args = getattr(request, "args", None) or ()
        kwargs = getattr(request, "kwargs", None) or {}
        value = kwargs.get("execution_id", args[0] if args else None)
        if value is None:
            continue
        try:
            ids.add(int(value))
        except (TypeError, ValueError):
            continue
    return sorted(ids)


class WorkerAgent:
    """This worker process as an agent: its identity, registration and heartbeat."""

    def __init__(
        self,
        *,
        name: str,
        queues: Iterable[str],
        running: Callable[[], list[int]] = running_executions,
    ) -> None:
        self.name = name
        self.queues = sorted(set(queues))
        self.instance_id = uuid.uuid4()
        self.started_at = timezone.now()
        self.running = running
        self.agent: Agent | None = None
        self.sampler = Sampler()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self._saved_at = 0.0
        self._saved_running: list[int] | None = None
        # The worker's consumer, once it is ready; consuming only while registered.
        self.consumer: Any = None

    def register(self) -> Agent | None:
        try:
            self.agent = services.agent_register(
                name=self.name,
                instance_id=self.instance_id,
                facts=host_facts(),
                queues=self.queues,
                started_at=self.started_at,
            )
            self._saved_at = time.monotonic()
        except services.AgentNameTaken as error:
            logger.error("agent %s: %s", self.name, error)
        except (DatabaseError, InterfaceError):
            logger.exception("agent %s: registration failed; retrying", self.name)
        return self.agent

    def ready(self, consumer: Any) -> None:
        """The worker is about to consume: take work only as a registered agent.

        Unregistered (the database was away at start, or another live worker holds
        the name), it cannot know whether an operator drained it, nor can the runs it
        takes be recovered if it dies; it consumes once it is registered and not
        drained.
        """
        self.consumer = consumer
        if self.agent is None:
            logger.warning("agent %s is not registered; consuming nothing", self.name)
        elif self.agent.drained:
            logger.warning("agent %s is drained; consuming nothing", self.name)
        else:
            return
        for queue in self.queues:
            consumer.cancel_task_queue(queue)

    def _consume(self, on: bool) -> None:
        """Start or stop consuming, from the heartbeat thread (the consumer's loop
        runs the change, as Celery's own add_consumer/cancel_consumer do).

        Always sent, never skipped by what this object last did: an operator's
        drain or resume changes the consumer behind its back (Celery's remote
        control), and both changes are no-ops on a queue already in that state."""
        if self.consumer is None:
            return
        change = self.consumer.add_task_queue if on else self.consumer.cancel_task_queue
        for queue in self.queues:
            self.consumer.call_soon(change, queue)
        logger.warning(
            "agent %s: %s its queues", self.name, "consuming" if on else "left"
        )

    def beat(self) -> None:
        """One heartbeat. Never raises: a bad beat is logged and the next one tries."""
        close_old_connections()
        try:
            if self.agent is None:
                if self.register() is None:
                    return
                assert self.agent is not None
                if not self.agent.drained:
                    self._consume(True)
            assert self.agent is not None
            running = sorted(set(self.running()))
            sample = self.sampler.sample(running=running)
            persist = (
                time.monotonic() - self._saved_at >= settings.KARMCHARI_AGENT_DB_SECONDS
                or running != self._saved_running
            )
            try:
                services.agent_heartbeat(
                    agent=self.agent, sample=sample, persist=persist
                )
            except services.AgentGone:
                logger.warning("agent %s lost its row; registering again", self.name)
                self.agent = None
                self._consume(False)
                return
            if persist:
                self._saved_at = time.monotonic()
                self._saved_running = running
        except Exception:
            logger.exception("agent %s: heartbeat failed", self.name)
        finally:
            close_old_connections()

    def _loop(self) -> None:
        while not self.stopped.is_set():
            self.beat()
            self.stopped.wait(settings.KARMCHARI_HEARTBEAT_SECONDS)

    def start(self) -> None:
        if self.thread is not None:
            return
        self.thread = threading.Thread(
            target=self._loop, name="karmchari-heartbeat", daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join(timeout=settings.KARMCHARI_HEARTBEAT_SECONDS + 5)
        if self.agent is None:
            return
        try:
            services.agent_mark_offline(agent=self.agent, reason="Its worker stopped.")
        except (DatabaseError, InterfaceError):
            logger.exception("agent %s: cannot mark offline", self.name)


_current: WorkerAgent | None = None


def current() -> WorkerAgent | None:
    return _current


def _queues(app: Any) -> list[str]:
    return [str(name) for name in app.amqp.queues.consume_from or []]


@celeryd_after_setup.connect(dispatch_uid="agents.worker.register")
def on_after_setup(sender: str, instance: Any, **kwargs: Any) -> None:
    global _current
    _current = WorkerAgent(name=sender, queues=_queues(instance.app))
    agent = _current.register()
    if agent is None or agent.drained:
        # Not even at start: a task the consumer received before worker_ready (and
        # ready() cancels the queues) would run. Started later by add_task_queue.
        instance.app.amqp.queues.deselect(_current.queues)
    # The pool forks next: children must not share this process's connections.
    connections.close_all()


@worker_ready.connect(dispatch_uid="agents.worker.heartbeat")
def on_ready(sender: Any, **kwargs: Any) -> None:
    global _current
    if _current is None:
        # Workers started without the CLI (e.g. celery.contrib.testing) skip
        # celeryd_after_setup.
        _current = WorkerAgent(name=sender.hostname, queues=_queues(sender.app))
        _current.register()
    _current.ready(sender)
    _current.start()


@worker_shutdown.connect(dispatch_uid="agents.worker.goodbye")
def on_shutdown(sender: Any, **kwargs: Any) -> None:
    global _current
    if _current is not None:
        _current.stop()
        _current = None
