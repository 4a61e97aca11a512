"""The contract between instance and laptop: JSON Schemas (draft 2020-12) and ``validate``.

Every document either side writes is validated before it is written and after it
is read. A failure raises :class:`SchemaValidationError`, whose message names the
JSON path and what was expected. No I/O beyond reading the packaged schema files.
"""

from __future__ import annotations

import copy
import json
from datetime import date, datetime
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

KINDS = (
    "system-state",
    "training",
    "cleanup-status",
    "model-metadata",
    "sentinel",
    "error-record",
    "run-spec",
    "launch-request",
    "sweep",
)
_SHARED = ("defs",)


class SchemaValidationError(ValueError):
    """A document that does not match its schema.

    Attributes:
        kind: the schema name (e.g. ``system-state``).
        path: JSON path of the offending value, e.g. ``$.history[0].at``.
        reason: what was expected there.
    """

    def __init__(self, kind: str, path: str, reason: str, source: str | None = None) -> None:
        self.kind, self.path, self.reason, self.source = kind, path, reason, source
        where = f" in {source}" if source else ""
        super().__init__(f"invalid {kind}{where} at {path}: {reason}")


def _load(name: str) -> dict[str, Any]:
    text = resources.files(__package__).joinpath(f"{name}.schema.json").read_text("utf-8")
    return json.loads(text)


@cache
def _registry() -> Registry:
    resources_ = [(doc["$id"], Resource.from_contents(doc)) for doc in (_load(n) for n in (*KINDS, *_SHARED))]
    return Registry().with_resources(resources_)


# The formats the schemas use, checked (jsonschema checks none by default). A pattern alone lets
# "0000-00-00T00:00:00Z" or run id "20261399-999999" through, and every reader that does date
# arithmetic on them then crashes; the years are held to what a run can have written.
FORMATS = FormatChecker(formats=())
YEARS = (1970, 2999)


def _in_years(value: datetime | date) -> bool:
    if not YEARS[0] <= value.year <= YEARS[1]:
        raise ValueError(f"year {value.year} is not between {YEARS[0]} and {YEARS[1]}")
    return True


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    return not isinstance(value, str) or _in_years(datetime.fromisoformat(value.replace("Z", "+00:00")))


@FORMATS.checks("date", raises=ValueError)
def _date(value: object) -> bool:
    return not isinstance(value, str) or _in_years(date.fromisoformat(value))


@FORMATS.checks("run-id", raises=ValueError)
def _run_id(value: object) -> bool:
    # a sweep member's run id is its sweep's second and "-NNN" (the pattern checks the number)
    return not isinstance(value, str) or _in_years(datetime.strptime(value[:15], "%Y%m%d-%H%M%S"))


@cache
def _validator(kind: str) -> Draft202012Validator:
    if kind not in KINDS:
        raise KeyError(f"unknown schema kind {kind!r}; known: {', '.join(KINDS)}")
    schema = schema_for(kind)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=_registry(), format_checker=FORMATS)


@cache
def _schema(kind: str) -> dict[str, Any]:
    if kind not in (*KINDS, *_SHARED):
        raise KeyError(f"unknown schema kind {kind!r}; known: {', '.join(KINDS)}")
    return _load(kind)


def schema_for(kind: str) -> dict[str, Any]:
    """A copy of the schema document for ``kind``."""
    return copy.deepcopy(_schema(kind))


def schema_enum(name: str) -> tuple[Any, ...]:
    """The values of the shared definition ``defs.schema.json#/$defs/{name}`` (an ``enum``).

    Lists that code and schemas both need (instance types, markets...) live in the
    schema once and are read from here.

    Raises:
        KeyError: no such definition, or it is not an enum.
    """
    definition = _schema("defs")["$defs"].get(name)
    if not isinstance(definition, dict) or "enum" not in definition:
        raise KeyError(f"defs.schema.json has no enum definition {name!r}")
    return tuple(definition["enum"])


def json_path(parts: Any) -> str:
    """``$.a[0].b`` from a jsonschema ``absolute_path``."""
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def validate(kind: str, doc: Any, *, source: str | None = None) -> Any:
    """Validate ``doc`` against the ``kind`` schema and return it unchanged.

    Args:
        kind: one of :data:`KINDS`.
        doc: the parsed JSON document.
        source: where the document came from (an S3 key, a path), for the message.

    Raises:
        SchemaValidationError: naming the JSON path and what was expected.
    """
    error = best_match(_validator(kind).iter_errors(doc))
    if error is not None:
        reason = error.message
        if error.validator == "format" and error.cause is not None:
            reason += f" ({error.cause})"
        if len(reason) > 200:
            reason = reason[:197] + "..."
        raise SchemaValidationError(kind, json_path(error.absolute_path), reason, source)
    return doc


def validate_timestamp(value: Any, *, source: str | None = None) -> str:
    """``value`` if it is a timestamp as the schemas define it (``defs.schema.json#/$defs/timestamp``).

    Raises:
        SchemaValidationError: it is not.
    """
    error = best_match(_timestamp_validator().iter_errors(value))
    if error is not None:
        raise SchemaValidationError("timestamp", "$", error.message, source)
    return str(value)


@cache
def _timestamp_validator() -> Draft202012Validator:
    return Draft202012Validator(_schema("defs")["$defs"]["timestamp"], format_checker=FORMATS)


def examples(kind: str) -> list[Any]:
    """The ``examples`` the schema itself carries (each one must validate)."""
    return copy.deepcopy(_schema(kind).get("examples", []))


def with_defaults(kind: str, doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``doc`` with every missing property filled from the schema's ``default``.

    Descends into nested objects whose schema has ``properties``, so the
    defaults live in the schema file only.
    """
    return _fill(_schema(kind), copy.deepcopy(doc))


def _fill(schema: dict[str, Any], doc: Any) -> Any:
    if not isinstance(doc, dict):
        return doc
    for name, sub in schema.get("properties", {}).items():
        if name not in doc and "default" in sub:
            doc[name] = copy.deepcopy(sub["default"])
        if name in doc:
            doc[name] = _fill(sub, doc[name])
    return doc
