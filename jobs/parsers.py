"""Request parsing that turns every malformed body into a 400, never a 500."""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

from karmchari_site.nul import REFUSED, contains_nul


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, plus two clear 400s where DRF would let a 500 through: a
    body nested too deeply for Python's decoder (a RecursionError), and a NUL
    (U+0000) in any string, which PostgreSQL cannot store (karmchari_site/nul.py)."""

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Any = None,
    ) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(
                "JSON parse error - the body is nested too deeply."
            ) from None
        if contains_nul(data):
            raise ParseError(f"JSON parse error - {REFUSED}")
        return data
