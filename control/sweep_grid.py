"""A sweep's grid file: a base run spec and the run-spec paths to vary, expanded into points.

The grid file is TOML::

    spec = "base.toml"             # a base run spec, relative to this file (or an inline [base])
    [grid]
    "model.learning_rate" = [1e-4, 3e-4]
    "data.prefix" = ["cached-datasets/training-data/2026/10/", "cached-datasets/training-data/2026/11/"]

``invoke sweep --spec base.toml`` names the base on the command line instead (then the file
names none). Every key is a run-spec path ``section.field`` (sections ``instance``, ``data``,
``model``; ``env`` is the sweep's), every value a non-empty list of distinct values; the points
are their cartesian product in the file's key order, numbered from 1 (the member run id's NNN).
Each point is validated as a whole run spec (:func:`common.runspec.from_dict`), so an error
names its JSON path and the point. At most :data:`MAX_POINTS` points.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.runspec import RunSpec, from_dict
from schemas import schema_for

# Each point is a GPU job billed on its own, its state file and manifest entry read by every
# monitor/verify: 100 keeps a sweep reviewable in one table and one DescribeJobs page
# (DescribeJobs takes at most 100 job ids per call).
MAX_POINTS = 100
SECTIONS = ("instance", "data", "model")
GRID_KEYS = ("spec", "base", "grid")


@dataclass(frozen=True, kw_only=True)
class GridPoint:
    """One point: its number (1..), the values it sets, and its full run spec."""

    number: int
    values: Mapping[str, Any]
    spec: RunSpec = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class Grid:
    """A parsed grid: where it came from, the varied keys in order, and every point."""

    source: str
    keys: tuple[str, ...]
    points: tuple[GridPoint, ...]
    base_source: str


def load_grid(path: Path, *, env: str, spec_path: Path | None = None) -> Grid:
    """Read and expand a grid file.

    Args:
        path: the grid TOML file.
        env: the sweep's env (every point's ``env``).
        spec_path: ``--spec``: the base run spec (then the grid file names none).

    Raises:
        ConfigError: one line naming the file and the key (or the point and JSON path).
    """
    doc = _read_toml(path, what="grid file", flag="--grid")
    return parse_grid(doc, env=env, source=str(path), base_dir=Path(path).parent, spec_path=spec_path)


def parse_grid(
    doc: Mapping[str, Any], *, env: str, source: str, base_dir: Path, spec_path: Path | None = None
) -> Grid:
    """Expand a grid document (see the module docstring) into validated points.

    Raises:
        ConfigError: unknown top-level or grid key, no ``[grid]``, a value that is not a
            non-empty list of distinct values, too many points, or a point that is not a valid run spec.
    """
    unknown = sorted(set(doc) - set(GRID_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}; a grid file has {', '.join(GRID_KEYS)}")
    base, base_source = _base(doc, source=source, base_dir=base_dir, spec_path=spec_path)
    if base.get("env", env) != env:
        raise ConfigError(
            f"{base_source}: $.env: the spec is for env {base['env']!r} but --env={env}; drop one"
        )
    axes = _axes(doc.get("grid"), source)
    sizes = [len(values) for _, values in axes]
    count = math.prod(sizes)
    if count > MAX_POINTS:
        shape = " x ".join(str(n) for n in sizes)
        raise ConfigError(
            f"{source}: [grid] has {count} points ({shape}); at most {MAX_POINTS} per sweep (each is a "
            "GPU job billed on its own): split it into several sweeps or drop values"
        )
    keys = tuple(key for key, _ in axes)
    points = []
    for number, combo in enumerate(itertools.product(*(values for _, values in axes)), start=1):
        values = dict(zip(keys, combo, strict=True))
        points.append(
            GridPoint(number=number, values=values, spec=_point_spec(base, values, env, source, number))
        )
    from_dict({**copy.deepcopy(base), "env": env}, source=base_source)  # the base alone is valid too
    return Grid(source=source, keys=keys, points=tuple(points), base_source=base_source)


def _base(
    doc: Mapping[str, Any], *, source: str, base_dir: Path, spec_path: Path | None
) -> tuple[dict[str, Any], str]:
    """The base run-spec document and where it came from."""
    named, inline = doc.get("spec"), doc.get("base")
    given = [
        what for what, v in (("spec", named), ("[base]", inline), ("--spec", spec_path)) if v is not None
    ]
    if len(given) > 1:
        raise ConfigError(f"{source}: the base run spec is given twice ({' and '.join(given)}); keep one")
    if inline is not None:
        if not isinstance(inline, dict):
            raise ConfigError(f"{source}: base must be a table of run-spec sections ([base.model] ...)")
        return copy.deepcopy(dict(inline)), f"{source} [base]"
    if named is not None and not isinstance(named, str):
        raise ConfigError(f"{source}: spec must be the path of a run spec file, got {named!r}")
    path = spec_path if spec_path is not None else (base_dir / named if named else None)
    if path is None:
        return {}, "the default run spec"
    flag = "--spec" if spec_path is not None else f"{source}: spec"
    return _read_spec(Path(path), flag=flag), str(path)


def _read_spec(path: Path, *, flag: str) -> dict[str, Any]:
    if path.suffix == ".json":
        try:
            loaded = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{flag}: run spec {path} not found") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{flag}: run spec {path} is not readable JSON ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{flag}: run spec {path} must hold a JSON object")
        return loaded
    return dict(_read_toml(path, what="run spec", flag=flag))


def _read_toml(path: Path, *, what: str, flag: str) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} not found; pass an existing TOML file with {flag}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 TOML"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read ({exc.strerror or exc}); pass a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None


def _axes(grid: Any, source: str) -> list[tuple[str, list[Any]]]:
    """``[(key, values)]`` in the file's order, each key a known run-spec path."""
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(
            f"{source}: no [grid] table; add one with run-spec paths and lists of values, "
            'e.g. "model.learning_rate" = [1e-4, 3e-4]'
        )
    properties = schema_for("run-spec")["properties"]
    axes = []
    for key, values in _flatten(grid):
        section, _, name = key.partition(".")
        if section not in SECTIONS or name not in properties[section]["properties"]:
            known = ", ".join(f"{s}.*" for s in SECTIONS)
            raise ConfigError(
                f"{source}: [grid] key {key!r} is not a run-spec path ({known}, e.g. model.learning_rate)"
            )
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{source}: [grid] {key!r} must be a non-empty list of values, got {values!r}")
        seen = [json.dumps(v, sort_keys=True, default=str) for v in values]
        dup = next((v for v, s in zip(values, seen, strict=True) if seen.count(s) > 1), None)
        if dup is not None:
            raise ConfigError(f"{source}: [grid] {key!r} lists {dup!r} twice (two identical points)")
        axes.append((key, values))
    return axes


def _flatten(grid: dict[str, Any]) -> list[tuple[str, Any]]:
    """Quoted ``"model.x" = [...]`` and TOML's dotted ``model.x = [...]`` (a nested table) alike."""
    out: list[tuple[str, Any]] = []
    for key, value in grid.items():
        if isinstance(value, dict) and "." not in key:
            out += [(f"{key}.{k}", v) for k, v in value.items()]
        else:
            out.append((key, value))
    return out


def _point_spec(
    base: dict[str, Any], values: Mapping[str, Any], env: str, source: str, number: int
) -> RunSpec:
    doc = copy.deepcopy(base)
    doc["env"] = env
    for key, value in values.items():
        section, _, name = key.partition(".")
        part = doc.setdefault(section, {})
        if not isinstance(part, dict):
            raise ConfigError(f"{source}: the base's {section} is not a table")
        part[name] = copy.deepcopy(value)
    where = ", ".join(f"{k}={v!r}" for k, v in values.items())
    return from_dict(doc, source=f"{source} point {number} ({where})")
