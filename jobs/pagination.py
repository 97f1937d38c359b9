"""Paging for the API's lists."""

from __future__ import annotations

from rest_framework.pagination import LimitOffsetPagination

# The most rows one page may ask for: a larger ?limit= gets this many (an absurd
# one is not handed to the database, which cannot hold it).
MAX_PAGE = 1000


class LimitOffset(LimitOffsetPagination):
    max_limit = MAX_PAGE
