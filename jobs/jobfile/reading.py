"""The file's fields and its YAML, read with each value's place in the file."""

from __future__ import annotations

from typing import Any

import yaml

FORMAT_VERSION = 1

APP_FIELDS = ("description", "meta", "keep_succeeded", "keep_failed", "keep_days")
JOB_FIELDS = (
    "description",
    "kind",
    "spec",
    "enabled",
    "owner",
    "tags",
    "queue",
    "timeout",
    "max_retries",
    "retry_backoff",
    "overlap_policy",
    "max_concurrent",
    "ping_grace",
    "keep_succeeded",
    "keep_failed",
    "keep_days",
)
SCHEDULE_FIELDS = (
    "kind",
    "expression",
    "timezone",
    "enabled",
    "epsilon",
    "misfire_policy",
    "jitter",
    "jitter_hashed",
    "start_at",
    "end_at",
    "repetitions_left",
)
# Counted down as the schedule fires: the file sets it when the schedule is created.
_CREATE_ONLY = {"repetitions_left"}
# A schedule's numbers of seconds in a file (as a job's ping_grace).
_DURATIONS = {"epsilon", "jitter"}
_DATETIMES = {"start_at", "end_at"}


class JobfileError(ValueError):
    """The file cannot be applied (or exported); each problem names its place in the
    file."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --- Reading YAML with positions -----------------------------------------------------


class _Map(dict[Any, Any]):
    """A mapping that remembers where it and each of its keys are in the file."""

    mark: yaml.Mark | None = None
    marks: dict[Any, yaml.Mark]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    result = _Map()
    result.mark = node.start_mark
    result.marks = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.marks[key] = value_node.start_mark
    return result


_Loader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


def _located(value: Any) -> Any:
    """Plain dicts (a document built in code, not read from a file) as _Map."""
    if isinstance(value, dict) and not isinstance(value, _Map):
        located = _Map({key: _located(item) for key, item in value.items()})
        located.marks = {}
        return located
    if isinstance(value, list):
        return [_located(item) for item in value]
    return value


def _where(filename: str, mark: yaml.Mark | None) -> str:
    if mark is None:
        return filename
    return f"{filename}:{mark.line + 1}:{mark.column + 1}"


def jobfile_load(*, text: str, filename: str) -> Any:
    """The YAML document, with positions; JobfileError naming the place of a syntax
    error."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        problem = f"{exc.problem or exc}"
        raise JobfileError(
            [f"{_where(filename, exc.problem_mark)}: {problem}"]
        ) from None
    except yaml.YAMLError as exc:
        raise JobfileError([f"{filename}: {exc}"]) from None
    except RecursionError:
        # PyYAML builds nested collections recursively: a few hundred levels are
        # past Python's stack, and far past any job file.
        raise JobfileError([f"{filename}: nested too deeply"]) from None
