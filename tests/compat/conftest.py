"""Fixtures for the compatibility APIs: a basic-auth header, as `curl -u` sends."""

from __future__ import annotations

import base64

import pytest
from django.contrib.auth.models import User
from django.test import Client


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@pytest.fixture
def curl(admin_user: User) -> Client:
    """A client that sends `-u admin:password` on every request, as curl -u does."""
    return Client(HTTP_AUTHORIZATION=basic("admin", "password"))
