"""The site's URLs plus the agents API, until karmchari_site/urls.py includes it."""

from __future__ import annotations

from django.urls import include, path

from karmchari_site.urls import urlpatterns as site_urlpatterns

urlpatterns = [path("api/", include("agents.urls")), *site_urlpatterns]
