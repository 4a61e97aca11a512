"""A small IAM policy evaluator for testing the policy documents themselves.

moto ignores most conditions, so the conditional statements (tag-scoped
terminate, prefix-scoped list, launch-template-only RunInstances...) are proven
here against the documents, with AWS's rules for what this project uses:
explicit Deny wins, then any Allow, else implicit deny; ``*``/``?`` wildcards in
Action (case-insensitive) and Resource; policy variables ``${key}`` resolved
from the request context (an unresolvable one makes the statement match
nothing); condition operators ANDed, keys ANDed, values ORed; a missing key
fails the condition unless the operator ends in ``IfExists``. An operator it
does not know raises, so a new kind of condition cannot pass untested.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_VARIABLE = re.compile(r"\$\{([^}]+)\}")


class Unresolvable(Exception):
    """A policy variable the request context does not carry."""


@dataclass(frozen=True)
class Request:
    """One authorization question: may ``action`` be done on ``resource``?"""

    action: str
    resource: str
    context: Mapping[str, Any] = field(default_factory=dict)


def _wildcard(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def _resolve(text: str, context: Mapping[str, Any]) -> str:
    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in context:
            raise Unresolvable(key)
        return str(context[key])

    return _VARIABLE.sub(substitute, text)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _compare(operator: str, expected: str, actual: str) -> bool:
    if operator in ("StringEquals", "ArnEquals"):
        return expected == actual
    if operator in ("StringLike", "ArnLike"):
        return _wildcard(expected, actual)
    if operator == "Bool":
        return str(expected).lower() == str(actual).lower()
    raise NotImplementedError(f"condition operator {operator} is not modelled")


def _condition_holds(conditions: Mapping[str, Mapping[str, Any]], context: Mapping) -> bool:
    for raw_operator, keys in conditions.items():
        if_exists = raw_operator.endswith("IfExists")
        operator = raw_operator.removesuffix("IfExists")
        for key, expected in keys.items():
            if key not in context:
                if if_exists:
                    continue
                return False
            values = [_resolve(str(v), context) for v in _as_list(expected)]
            if not any(_compare(operator, v, str(context[key])) for v in values):
                return False
    return True


def _matches(statement: Mapping[str, Any], request: Request) -> bool:
    actions = _as_list(statement["Action"])
    if not any(_wildcard(a, request.action, ignore_case=True) for a in actions):
        return False
    try:
        resources = [_resolve(r, request.context) for r in _as_list(statement["Resource"])]
        if not any(_wildcard(r, request.resource) for r in resources):
            return False
        return _condition_holds(statement.get("Condition", {}), request.context)
    except Unresolvable:
        return False


def decide(policy: Mapping[str, Any], request: Request) -> str:
    """``"Deny"`` (explicit), ``"Allow"`` or ``"ImplicitDeny"``."""
    matching = [s for s in policy["Statement"] if _matches(s, request)]
    if any(s["Effect"] == "Deny" for s in matching):
        return "Deny"
    if any(s["Effect"] == "Allow" for s in matching):
        return "Allow"
    return "ImplicitDeny"


def allowed(policy: Mapping[str, Any], request: Request) -> bool:
    """Whether ``policy`` alone allows ``request``."""
    return decide(policy, request) == "Allow"
