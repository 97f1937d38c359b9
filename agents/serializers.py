from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from agents import live
from agents.models import Agent
from agents.stats import Sample


class StatsSerializer(serializers.Serializer[dict[str, Any]]):
    """The latest load figures: live from Redis, or the last ones saved."""

    origin = serializers.ChoiceField(
        choices=["live", "database"], help_text="Redis (live) or the saved row."
    )
    at = serializers.DateTimeField(allow_null=True)
    memory_total = serializers.IntegerField(allow_null=True)
    memory_free = serializers.IntegerField(allow_null=True)
    swap_total = serializers.IntegerField(allow_null=True)
    swap_free = serializers.IntegerField(allow_null=True)
    process_cpu_load = serializers.FloatField(allow_null=True)
    cpu_time = serializers.FloatField(allow_null=True)
    system_cpu_load = serializers.FloatField(allow_null=True)
    load_average = serializers.ListField(child=serializers.FloatField())


def stats_of(agent: Agent, sample: Sample | None) -> dict[str, Any]:
    if sample is not None:
        return {
            "origin": "live",
            "at": datetime.fromtimestamp(sample.at, tz=UTC),
            "memory_total": sample.memory_total,
            "memory_free": sample.memory_free,
            "swap_total": sample.swap_total,
            "swap_free": sample.swap_free,
            "process_cpu_load": sample.process_cpu_load,
            "cpu_time": sample.cpu_time,
            "system_cpu_load": sample.system_cpu_load,
            "load_average": sample.load_average,
            "running": sample.running,
        }
    return {
        "origin": "database",
        "at": agent.last_heartbeat,
        "memory_total": agent.memory_total,
        "memory_free": agent.memory_free,
        "swap_total": agent.swap_total,
        "swap_free": agent.swap_free,
        "process_cpu_load": agent.process_cpu_load,
        "cpu_time": agent.cpu_time,
        "system_cpu_load": agent.system_cpu_load,
        "load_average": agent.load_average or [],
        "running": agent.running or [],
    }


class AgentListSerializer(serializers.ListSerializer[Agent]):
    """Fetches the live stats of the whole page in one Redis round trip."""

    def to_representation(self, data: Any) -> list[Any]:
        agents = list(data.all() if hasattr(data, "all") else data)
        self.context["live"] = live.read_many(agent.instance_id for agent in agents)
        return super().to_representation(agents)


class AgentSerializer(serializers.ModelSerializer[Agent]):
    alive = serializers.SerializerMethodField(
        help_text="Not offline, and heard from within the liveness window."
    )
    stats = serializers.SerializerMethodField()
    executions = serializers.SerializerMethodField(
        help_text="Ids of the executions it is running."
    )

    class Meta:
        model = Agent
        list_serializer_class = AgentListSerializer
        fields = [
            "id",
            "instance_id",
            "name",
            "status",
            "alive",
            "host",
            "os_name",
            "os_version",
            "cpu_arch",
            "cpu_cores",
            "memory_total",
            "swap_total",
            "queues",
            "version",
            "pid",
            "started_at",
            "last_heartbeat",
            "stats",
            "executions",
        ]
        read_only_fields = fields

    def _sample(self, agent: Agent) -> Sample | None:
        samples = self.context.get("live")
        if samples is None:
            samples = self.context["live"] = live.read_many([agent.instance_id])
        return samples.get(str(agent.instance_id))

    def get_alive(self, agent: Agent) -> bool:
        if agent.status == Agent.Status.OFFLINE:
            return False
        sample = self._sample(agent)
        seen_at = datetime.fromtimestamp(sample.at, tz=UTC) if sample else None
        return agent.is_fresh(now=timezone.now(), seen_at=seen_at)

    def get_stats(self, agent: Agent) -> dict[str, Any]:
        data = StatsSerializer(stats_of(agent, self._sample(agent))).data
        return dict(data)

    def get_executions(self, agent: Agent) -> list[int]:
        if agent.status == Agent.Status.OFFLINE:
            return []
        return list(stats_of(agent, self._sample(agent))["running"])


class PointSerializer(serializers.Serializer[Any]):
    at = serializers.FloatField(help_text="Unix time.")
    memory_free = serializers.IntegerField()
    swap_free = serializers.IntegerField()
    process_cpu_load = serializers.FloatField(allow_null=True)
    system_cpu_load = serializers.FloatField(allow_null=True)
    load1 = serializers.FloatField(allow_null=True)
    running = serializers.IntegerField()
