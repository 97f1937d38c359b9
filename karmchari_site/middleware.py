"""Small request fix-ups that belong to no app."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve


class ApiTrailingSlashMiddleware:
    """`/api/...` without its trailing slash is served as with it, instead of
    CommonMiddleware's 301: a client that follows a redirect of a POST turns it into
    a GET (405), so `POST /api/executions/7/kill` would kill nothing. Paths that
    resolve as they are (the Kala routes, whose slash is optional) are left alone."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if path.startswith("/api/") and not path.endswith("/"):
            try:
                resolve(path)
            except Resolver404:
                try:
                    resolve(path + "/")
                except Resolver404:
                    pass
                else:
                    request.path_info = path + "/"
                    request.path = request.path + "/"
        return self.get_response(request)
