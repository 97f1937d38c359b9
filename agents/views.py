from __future__ import annotations

from collections.abc import Callable

from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from agents import live, services
from agents.models import Agent
from agents.serializers import AgentSerializer, PointSerializer


class AgentViewSet(viewsets.ReadOnlyModelViewSet[Agent]):
    """Workers, with live stats from Redis (falling back to the last saved ones).

    Permissions: the project's default (model permissions, reads included); drain and
    resume need `agents.change_agent`.
    """

    queryset = Agent.objects.all()
    serializer_class = AgentSerializer
    filterset_fields = ["status", "host"]
    search_fields = ["name", "host"]
    ordering_fields = ["name", "last_heartbeat", "started_at"]
    action_permissions = {
        "drain": ["agents.change_agent"],
        "resume": ["agents.change_agent"],
    }

    @extend_schema(request=None, responses={200: AgentSerializer, 409: None, 503: None})
    @action(detail=True, methods=["post"])
    def drain(self, request: Request, pk: str | None = None) -> Response:
        """Stop taking new work; running executions finish."""
        return self._control(services.agent_drain)

    @extend_schema(request=None, responses={200: AgentSerializer, 409: None, 503: None})
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        """Consume the agent's queues again after a drain."""
        return self._control(services.agent_resume)

    def _control(self, service: Callable[..., Agent]) -> Response:
        agent = self.get_object()
        try:
            agent = service(agent=agent)
        except services.AgentUnreachable as exc:
            return Response(
                {"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE
            )
        except services.AgentError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(self.get_serializer(agent).data)

    @extend_schema(responses=PointSerializer(many=True))
    @action(detail=True, methods=["get"])
    def history(self, request: Request, pk: str | None = None) -> Response:
        """The last hour of stats, oldest first (empty when Redis has none)."""
        agent = self.get_object()
        points = live.read_history(agent.instance_id)
        return Response(PointSerializer(points, many=True).data)
