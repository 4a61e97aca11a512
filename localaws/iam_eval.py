"""An IAM identity-policy evaluator: the rules AWS applies, for the audit and the policy tests.

moto ignores most conditions and EC2 resource ARNs, so local mode proves the
policies here. Rules (IAM User Guide, "Policy evaluation logic" and "Condition
operators"):

- an explicit Deny in any policy wins, then any Allow, else an implicit deny;
- ``Action``/``NotAction`` match case-insensitively with ``*``/``?``;
  ``Resource``/``NotResource`` match case-sensitively, each of the six
  colon-separated ARN parts on its own;
- condition operators are ANDed, keys ANDed, values ORed; a key missing from the
  request makes a condition false, except for negated operators (``StringNotLike``,
  ``ArnNotEquals``...: true), ``...IfExists`` (true) and ``Null``;
- ``ForAnyValue:``/``ForAllValues:`` compare multi-valued keys (``aws:TagKeys``)
  element by element; an unqualified operator on a multi-valued key raises;
- policy variables ``${key}`` (with ``${key, 'default'}``, ``${*}``, ``${?}``,
  ``${$}``) resolve from the request; a statement whose variable cannot be
  resolved matches nothing.

An operator it does not know raises :class:`UnsupportedPolicy`, so a new kind of
condition can never pass unexamined. ``Principal`` is not evaluated (identity
policies have none; resource policies are evaluated as if it matched).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

_VARIABLE = re.compile(r"\$\{([^}]+)\}")
_SPECIAL = {"*": "*", "?": "?", "$": "$"}


class Unresolvable(Exception):
    """A policy variable the request context does not carry."""


class UnsupportedPolicy(Exception):
    """A policy construct (operator, qualifier) the evaluator does not model."""


@dataclass(frozen=True)
class Request:
    """One authorization question: may ``action`` be done on ``resource``, in ``context``?

    Context values are strings, or lists of strings for multi-valued keys.
    """

    action: str
    resource: str
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """The answer to a :class:`Request` over a set of policies.

    Attributes:
        effect: ``"Allow"``, ``"Deny"`` (explicit) or ``"ImplicitDeny"``.
        allowed_by: Sids (or ``policy#index``) of the matching Allow statements.
        denied_by: Sids of the matching Deny statements.
        near_misses: for statements whose action and resource matched but a
            condition did not: ``(sid, "condition <Operator> <key> failed")``.
    """

    effect: str
    allowed_by: tuple[str, ...] = ()
    denied_by: tuple[str, ...] = ()
    near_misses: tuple[tuple[str, str], ...] = ()

    @property
    def allowed(self) -> bool:
        """Whether the request is allowed."""
        return self.effect == "Allow"


# ---------------------------------------------------------------- matching


def _wildcard(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


def _arn_like(pattern: str, value: str) -> bool:
    """ARN match: each of the six colon-separated parts separately, with wildcards.

    IAM User Guide, "Amazon Resource Name (ARN) condition operators": "Each of
    the six colon-delimited components of the ARN is checked separately".
    """
    if pattern == "*":
        return True
    pattern_parts, value_parts = pattern.split(":", 5), value.split(":", 5)
    if len(pattern_parts) != 6 or len(value_parts) != 6:
        return False  # not an ARN pattern: matches nothing (a linter flags it)
    return all(_wildcard(p, v) for p, v in zip(pattern_parts, value_parts, strict=True))


def _resolve(text: str, context: Mapping[str, Any]) -> str:
    def substitute(match: re.Match[str]) -> str:
        inner = match.group(1).strip()
        if inner in _SPECIAL:
            return _SPECIAL[inner]
        key, _, default = inner.partition(",")
        key, default = key.strip(), default.strip()
        value = context.get(key.lower())
        if value is None or isinstance(value, list | tuple):
            if default.startswith("'") and default.endswith("'") and len(default) >= 2:
                return default[1:-1]
            raise Unresolvable(key)
        return str(value)

    return _VARIABLE.sub(substitute, text)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --------------------------------------------------------------- operators


def _number(text: str) -> float:
    return float(text)


def _date(text: str) -> datetime:
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return datetime.fromtimestamp(float(text), UTC)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _ordered(convert: Callable[[str], Any], test: Callable[[Any, Any], bool]) -> Callable[[str, str], bool]:
    def compare(expected: str, actual: str) -> bool:
        try:
            return test(convert(actual), convert(expected))
        except ValueError:
            return False

    return compare


def _ip(expected: str, actual: str) -> bool:
    try:
        return ipaddress.ip_address(actual) in ipaddress.ip_network(expected, strict=False)
    except ValueError:
        return False


# Positive comparisons (expected policy value, actual request value) -> match.
_POSITIVE: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda e, a: e == a,
    "StringEqualsIgnoreCase": lambda e, a: e.lower() == a.lower(),
    "StringLike": _wildcard,
    "ArnEquals": _arn_like,  # ArnEquals and ArnLike behave the same (IAM User Guide)
    "ArnLike": _arn_like,
    "Bool": lambda e, a: e.lower() == a.lower(),
    "BinaryEquals": lambda e, a: e == a,
    "IpAddress": _ip,
    "NumericEquals": _ordered(_number, lambda a, e: a == e),
    "NumericLessThan": _ordered(_number, lambda a, e: a < e),
    "NumericLessThanEquals": _ordered(_number, lambda a, e: a <= e),
    "NumericGreaterThan": _ordered(_number, lambda a, e: a > e),
    "NumericGreaterThanEquals": _ordered(_number, lambda a, e: a >= e),
    "DateEquals": _ordered(_date, lambda a, e: a == e),
    "DateLessThan": _ordered(_date, lambda a, e: a < e),
    "DateLessThanEquals": _ordered(_date, lambda a, e: a <= e),
    "DateGreaterThan": _ordered(_date, lambda a, e: a > e),
    "DateGreaterThanEquals": _ordered(_date, lambda a, e: a >= e),
}
# Negated operators: true when no policy value matches (the positive operator's answer, inverted).
_NEGATED: dict[str, str] = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
    "NumericNotEquals": "NumericEquals",
    "DateNotEquals": "DateEquals",
    "NotIpAddress": "IpAddress",
}


def _parse_operator(raw: str) -> tuple[str | None, str, bool]:
    """``ForAnyValue:StringLikeIfExists`` -> ``("ForAnyValue", "StringLike", True)``."""
    qualifier, _, name = raw.rpartition(":")
    if qualifier not in ("", "ForAnyValue", "ForAllValues"):
        raise UnsupportedPolicy(f"condition set operator {qualifier!r} is not modelled")
    if_exists = name.endswith("IfExists") and name != "IfExists"
    name = name.removesuffix("IfExists") if if_exists else name
    if name != "Null" and name not in _POSITIVE and name not in _NEGATED:
        raise UnsupportedPolicy(f"condition operator {raw!r} is not modelled")
    return qualifier or None, name, if_exists


def _one_value(name: str, expected: list[str], actual: str) -> bool:
    """Single request value against the policy values, for a non-Null operator."""
    if name in _NEGATED:
        return not any(_POSITIVE[_NEGATED[name]](e, actual) for e in expected)
    return any(_POSITIVE[name](e, actual) for e in expected)


def _key_holds(raw_operator: str, key: str, expected_raw: Any, context: Mapping[str, Any]) -> bool:
    qualifier, name, if_exists = _parse_operator(raw_operator)
    key = key.lower()  # condition key names are case-insensitive
    present = key in context and context[key] is not None
    if name == "Null":
        wanted_absent = [_text(v).lower() == "true" for v in _as_list(expected_raw)]
        return any(absent != present for absent in wanted_absent)
    if not present:
        if if_exists:
            return True
        if qualifier == "ForAllValues":
            return True  # vacuous truth: AWS's documented ForAllValues pitfall
        return qualifier is None and name in _NEGATED
    expected = [_resolve(_text(v), context) for v in _as_list(expected_raw)]
    actual = context[key]
    if qualifier is None:
        if isinstance(actual, list | tuple):
            raise UnsupportedPolicy(f"{raw_operator} on multi-valued key {key}: use ForAnyValue/ForAllValues")
        return _one_value(name, expected, _text(actual))
    values = [_text(v) for v in _as_list(actual)]
    if qualifier == "ForAnyValue":
        return any(_one_value(name, expected, v) for v in values)
    return all(_one_value(name, expected, v) for v in values)


def _failed_condition(conditions: Mapping[str, Mapping[str, Any]], context: Mapping[str, Any]) -> str | None:
    """``None`` if every condition holds, else ``"<Operator> <key>"`` of the first that fails."""
    for raw_operator, keys in conditions.items():
        for key, expected in keys.items():
            if not _key_holds(raw_operator, key, expected, context):
                return f"{raw_operator} {key}"
    return None


# --------------------------------------------------------------- statements


def _element_matches(statement: Mapping[str, Any], name: str, test: Callable[[str], bool]) -> bool:
    """``Action``/``NotAction`` (or ``Resource``/``NotResource``) of the statement matches."""
    if name in statement:
        return any(test(p) for p in _as_list(statement[name]))
    negated = f"Not{name}"
    if negated in statement:
        return not any(test(p) for p in _as_list(statement[negated]))
    raise UnsupportedPolicy(f"statement has neither {name} nor {negated}")


def _statement_outcome(statement: Mapping[str, Any], request: Request) -> tuple[bool, str | None]:
    """``(matches, why_not)``: why_not is set when action and resource matched but a condition failed.

    ``request.context`` must have lower-case keys (see :func:`evaluate`).
    """
    if not _element_matches(statement, "Action", lambda a: _wildcard(a, request.action, ignore_case=True)):
        return False, None
    try:
        if not _element_matches(
            statement, "Resource", lambda r: _arn_like(_resolve(r, request.context), request.resource)
        ):
            return False, None
        failed = _failed_condition(statement.get("Condition", {}), request.context)
    except Unresolvable as exc:
        return False, f"policy variable ${{{exc.args[0]}}} unresolvable"
    if failed is not None:
        return False, f"condition {failed} failed"
    return True, None


def evaluate(policies: Sequence[Mapping[str, Any]], request: Request) -> Decision:
    """The decision over several identity policies of one principal (their union).

    Args:
        policies: policy documents (``{"Statement": [...]}``, a statement may be a
            single object).
        request: the authorization request.

    Returns:
        The :class:`Decision`; explicit Deny in any policy wins over any Allow.

    Raises:
        UnsupportedPolicy: an operator or element the evaluator does not model.
    """
    request = Request(request.action, request.resource, {k.lower(): v for k, v in request.context.items()})
    allows: list[str] = []
    denies: list[str] = []
    misses: list[tuple[str, str]] = []
    for p_index, policy in enumerate(policies):
        for s_index, statement in enumerate(_as_list(policy["Statement"])):
            sid = statement.get("Sid") or f"policy{p_index}#{s_index}"
            matches, why_not = _statement_outcome(statement, request)
            if matches:
                (denies if statement["Effect"] == "Deny" else allows).append(sid)
            elif why_not is not None and statement["Effect"] == "Allow":
                misses.append((sid, why_not))
    effect = "Deny" if denies else "Allow" if allows else "ImplicitDeny"
    return Decision(effect, tuple(allows), tuple(denies), tuple(misses))


def decide(policy: Mapping[str, Any], request: Request) -> str:
    """``"Deny"`` (explicit), ``"Allow"`` or ``"ImplicitDeny"`` for one policy."""
    return evaluate([policy], request).effect


def allowed(policy: Mapping[str, Any], request: Request) -> bool:
    """Whether ``policy`` alone allows ``request``."""
    return decide(policy, request) == "Allow"
