from __future__ import annotations

from rest_framework.routers import SimpleRouter

from agents import views

# SimpleRouter: the API root view belongs to jobs.urls (a DefaultRouter).
router = SimpleRouter()
router.register("agents", views.AgentViewSet)

urlpatterns = router.urls
