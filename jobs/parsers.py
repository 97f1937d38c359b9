"""Request parsing that turns every malformed body into a 400, never a 500."""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError, ValidationError

from karmchari_site.text import unstorable_path


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, plus two clear 400s where DRF would let a 500 through: a
    body nested too deeply for Python's decoder (a RecursionError), and text
    PostgreSQL cannot store (a NUL or a lone surrogate; karmchari_site/text.py),
    named by the field holding it, as the field's own validation would."""

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
        found = unstorable_path(data)
        if found is None:
            return data
        path, why = found
        if not path:
            raise ParseError(f"JSON parse error - {why}")
        # Named like a field's own error: {"secrets": {"TOKEN": ["..."]}}.
        detail: Any = [why]
        for key in reversed(path):
            detail = {key: detail}
        raise ValidationError(detail)
