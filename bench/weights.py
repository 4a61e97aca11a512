"""Two trainings' final weights compared tensor by tensor, and the table of those comparisons."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core import Table


@dataclass(frozen=True, kw_only=True)
class WeightDiff:
    """Two sets of weights compared tensor by tensor.

    Attributes:
        max_abs_diff: the largest absolute difference over all tensors both hold with one shape.
        identical: same names, shapes and dtypes, and every value bit for bit equal.
        mismatched: names held by one side only, or with another shape or dtype.
    """

    max_abs_diff: float
    identical: bool
    mismatched: tuple[str, ...] = ()


def compare_weights(a: Mapping[str, Any], b: Mapping[str, Any]) -> WeightDiff:
    """Compare two ``{name: tensor}`` state dicts (as ``safetensors.torch.load_file`` returns)."""
    import torch

    mismatched: list[str] = []
    largest = 0.0
    equal = True
    for name in sorted(set(a) | set(b)):
        x, y = a.get(name), b.get(name)
        if x is None or y is None or x.shape != y.shape or x.dtype != y.dtype:
            mismatched.append(name)
            continue
        equal = equal and bool(torch.equal(x, y))
        if x.numel():
            largest = max(largest, float((x.double() - y.double()).abs().max()))
    return WeightDiff(max_abs_diff=largest, identical=equal and not mismatched, mismatched=tuple(mismatched))


def compare_files(a: Path, b: Path) -> WeightDiff:
    """:func:`compare_weights` of two ``model.safetensors`` files."""
    from safetensors.torch import load_file

    return compare_weights(load_file(str(a)), load_file(str(b)))


def weights_table(rows: Sequence[tuple[str, str, Sequence[WeightDiff]]]) -> Table:
    """One row per comparison: how many rounds were bit-identical, and the largest difference."""
    table = Table(
        title="Final weights: the trainer against upstream fit, same seed, data and steps",
        columns=["model", "compared with", "rounds bit-identical", "max abs diff"],
    )
    for model, other, diffs in rows:
        same = sum(d.identical for d in diffs)
        table.add(model, other, f"{same} of {len(diffs)}", max((d.max_abs_diff for d in diffs), default=None))
    return table
