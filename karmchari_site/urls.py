from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import IsAuthenticated

from jobs.metrics import metrics_view
from jobs.pings import ping_view
from jobs.views import ObtainTokenView

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("ping/<uuid:uid>", ping_view, name="ping"),
    path("ping/<uuid:uid>/start", ping_view, {"verb": "start"}, name="ping-start"),
    path("ping/<uuid:uid>/fail", ping_view, {"verb": "fail"}, name="ping-fail"),
    path("api/token/", ObtainTokenView.as_view(), name="api-token"),
    path(
        "api/schema/",
        SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]),
        name="api-schema",
    ),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(
            url_name="api-schema", permission_classes=[IsAuthenticated]
        ),
        name="api-docs",
    ),
    path("api/", include("agents.urls")),
    path("api/", include("jobs.urls")),
    # Last: JobStreamer's /{app}/... patterns must not shadow anything above.
    path("", include("compat.urls")),
]

handler404 = "karmchari_site.errors.page_not_found"
handler500 = "karmchari_site.errors.server_error"
