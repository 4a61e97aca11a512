"""What the property-based tests share: the example counter, mutated documents, a TOML writer.

A mutated document starts from a valid one and gets one to three edits at random JSON
paths: a key dropped, a value of the wrong type, a huge or non-finite number, a unicode
string, an unknown key, an emptied container. :func:`damaged_bytes` goes below JSON:
truncation, invalid UTF-8, flipped bytes, not JSON at all.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from reliability import record

# -- how many examples: the ci profile's, times FUZZ_FACTOR under the fuzz profile -------------------
CI_EXAMPLES = 40  # the ci profile's max_examples (a test's own count is scaled from it)
FUZZ_FACTOR = 10  # make fuzz: ~14,000 examples in all (the cheap tests get more, see their fuzz=)


def scaled(n: int, *, fuzz: int | None = None) -> int:
    """``n`` examples under the ci profile; ``fuzz`` (default ``n * FUZZ_FACTOR``) under the fuzz one."""
    from hypothesis import settings

    if settings().max_examples >= CI_EXAMPLES * FUZZ_FACTOR:
        return fuzz if fuzz is not None else n * FUZZ_FACTOR
    return n


# -- the count of examples run (RELIABILITY.md's fuzz_examples; the summary prints this process's) ----
COUNTED = {"examples": 0}


def example() -> None:
    """Count one hypothesis example (call it first thing in every ``@given`` body)."""
    COUNTED["examples"] += 1
    record.count(record.Total.FUZZ_EXAMPLES)


# -- JSON values ------------------------------------------------------------------------------------
HUGE = (10**30, -(10**30), 2**63, 2**64 + 1, -(2**63) - 1, 1e308, -1e308, 5e-324)
ODD_FLOATS = (math.nan, math.inf, -math.inf)
ODD_TEXT = ("", " ", "\x00", "é", "日本語", "\U0001f600", "\u202e", "a" * 5000, "../../etc", "null", "1e999")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(ODD_TEXT),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into ``doc`` (the root is ``()``)."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


def _mutate_once(draw: Callable[..., Any], doc: Any) -> Any:
    paths = _paths(doc)
    path = draw(st.sampled_from(paths))
    kind = draw(st.sampled_from(("replace", "drop", "add", "empty", "wrap", "huge", "text")))
    if not path:  # the root itself
        return draw(json_values) if kind in ("replace", "text", "huge") else doc
    parent, last = _parent(doc, path), path[-1]
    value = parent[last]
    if kind == "drop":
        del parent[last]
    elif kind == "add" and isinstance(value, dict):
        value[draw(st.text(max_size=12))] = draw(json_values)
    elif kind == "empty":
        parent[last] = type(value)() if isinstance(value, dict | list | str) else None
    elif kind == "wrap":
        parent[last] = [value]
    elif kind == "huge":
        parent[last] = draw(st.sampled_from(HUGE + ODD_FLOATS))
    elif kind == "text":
        parent[last] = draw(st.one_of(st.text(max_size=40), st.sampled_from(ODD_TEXT)))
    else:
        parent[last] = draw(json_values)
    return doc


@st.composite
def mutated(draw: Callable[..., Any], valid: Any, most: int = 3) -> Any:
    """``valid`` (deep-copied) with 1..``most`` random edits."""
    doc = json.loads(json.dumps(valid))
    for _ in range(draw(st.integers(1, most))):
        doc = _mutate_once(draw, doc)
    return doc


@st.composite
def damaged_bytes(draw: Callable[..., Any], valid: Any) -> bytes:
    """The JSON text of ``valid`` (or a mutation of it) broken below the JSON level."""
    text = json.dumps(draw(st.one_of(st.just(valid), mutated(valid))), allow_nan=True).encode()
    kind = draw(st.sampled_from(("truncate", "latin1", "flip", "garbage", "empty", "nan", "bom")))
    if kind == "truncate":
        return text[: draw(st.integers(0, max(len(text) - 1, 0)))]
    if kind == "latin1":
        at = draw(st.integers(0, len(text)))
        return text[:at] + b"\xff\xfe\xe9" + text[at:]
    if kind == "flip":
        at = draw(st.integers(0, max(len(text) - 1, 0)))
        return text[:at] + bytes([text[at] ^ draw(st.integers(1, 255))]) + text[at + 1 :] if text else b"\x00"
    if kind == "garbage":
        return draw(st.binary(max_size=200))
    if kind == "empty":
        return b""
    if kind == "bom":
        return b"\xef\xbb\xbf" + text
    return draw(
        st.sampled_from((b"NaN", b"Infinity", b"[" * 50 + b"]" * 50, b"1" * 4000))
    )  # JSON's odd corners


# JSON that json.loads refuses with neither JSONDecodeError nor UnicodeDecodeError: nesting past the
# recursion limit (RecursionError) and an integer past Python's 4300 digits (ValueError).
JSON_BOMBS = (b"[" * 100_000, b'{"a": ' * 50_000, b"1" * 5000, b'{"step": ' + b"9" * 5000 + b"}")


# -- TOML ---------------------------------------------------------------------------------------------
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k, ensure_ascii=False)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML for {v!r}")


def to_toml(doc: dict[str, Any]) -> str:
    """``doc`` as TOML (``None`` values, which TOML lacks, are left out; integers outside TOML's
    64 bits are written anyway: the reader must refuse them with a clear line)."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for k, v in doc.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif v is not None:
            lines.append(f"{_key(k)} = {_toml_value(_no_none(v))}")
    for name, table in tables:
        lines.append(f"[{_key(name)}]")
        lines += [f"{_key(k)} = {_toml_value(_no_none(v))}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def _no_none(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _no_none(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_no_none(x) for x in v if x is not None]
    return v


# -- what a user-facing error must say ------------------------------------------------------------------
JSON_PATH = re.compile(r"\$(\.|\[|:|\s|$)")


def one_line(message: str) -> str:
    """``message`` checked to be one non-empty line with no traceback in it."""
    if not message.strip() or "\n" in message.strip() or "Traceback" in message:
        raise AssertionError(f"not one clear line: {message!r}")
    return message


def names_a_path(message: str) -> bool:
    """The message names a JSON path (``$``, ``$.model.seed``, ``$[0]`` ...)."""
    return bool(JSON_PATH.search(message))
