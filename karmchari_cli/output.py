"""What the CLI prints: aligned tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO


def write(text: str, *, stream: TextIO | None = None) -> None:
    (stream or sys.stdout).write(text)
    (stream or sys.stdout).flush()


def error(text: str) -> None:
    write(f"karmchari: {text}\n", stream=sys.stderr)


def as_json(data: Any) -> None:
    write(json.dumps(data, indent=2, default=str) + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(_cell(item) for item in value) or "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Columns padded to their widest cell, headed by their names in capitals."""
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    header = [column.upper() for column in columns]
    widths = [
        max(len(text) for text in [name, *(row[i] for row in cells)])
        for i, name in enumerate(header)
    ]
    lines = [header, *cells]
    write(
        "".join(
            "  ".join(
                text.ljust(width) for text, width in zip(line, widths, strict=True)
            ).rstrip()
            + "\n"
            for line in lines
        )
    )
