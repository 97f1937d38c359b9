from __future__ import annotations

from rest_framework.routers import DefaultRouter

from jobs import views

router = DefaultRouter()
router.register("apps", views.AppViewSet)
router.register("jobs", views.JobViewSet)
router.register("executions", views.ExecutionViewSet)

urlpatterns = router.urls
