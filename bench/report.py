"""Benchmark results and their markdown."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Result:
    """Two alternatives timed side by side; ``ratio`` = baseline / candidate (higher: candidate faster)."""

    name: str
    what: str
    baseline: str
    candidate: str
    unit: str
    baseline_values: list[float] = field(default_factory=list)
    candidate_values: list[float] = field(default_factory=list)
    notes: str = ""

    @property
    def baseline_median(self) -> float:
        return statistics.median(self.baseline_values)

    @property
    def candidate_median(self) -> float:
        return statistics.median(self.candidate_values)

    @property
    def ratio(self) -> float:
        return self.baseline_median / self.candidate_median if self.candidate_median else float("inf")

    def summary(self) -> str:
        return (
            f"  {self.baseline}: {self.baseline_median:.4g} {self.unit} | "
            f"{self.candidate}: {self.candidate_median:.4g} {self.unit} | ratio {self.ratio:.2f}x"
        )


def render(results: list[Result], header: str, extra: list[str] | None = None) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench`. Each row times two alternatives side by side in one run",
        f"(interleaved rounds, medians); the ratio is baseline / candidate. {header}",
        "Absolute numbers depend on the machine; compare ratios, not values across runs.",
        "",
        "| benchmark | what | baseline | candidate | baseline median | candidate median | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.what} | {r.baseline} | {r.candidate} | {r.baseline_median:.4g} {r.unit} "
            f"| {r.candidate_median:.4g} {r.unit} | **{r.ratio:.2f}x** |"
        )
    notes = [f"- **{r.name}**: {r.notes}" for r in results if r.notes]
    if notes:
        lines += ["", "## Notes", "", *notes]
    for section in extra or []:
        lines += ["", section]
    return "\n".join(lines) + "\n"
