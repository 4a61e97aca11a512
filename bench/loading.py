"""Data loading at scale: 5,000 series x 2,000 points (10M rows), time and peak memory.

The synthetic dataset (:func:`trainer.synthetic.generate_dataset`) is written once by a
process of its own; then each loader runs in a fresh process, interleaved over the
rounds: the trainer's :func:`trainer.data.load_dataset` (read, validate, place on the
grid, cut the windows) and what a user of upstream Chronos-2 writes instead,
``pandas.read_parquet`` of every file and ``chronos.chronos2.preprocess.from_data_frame``.
Peak memory is the loading process's own high-water mark (``VmHWM`` in
``/proc/self/status``): ``ru_maxrss`` of a child forked from a big process carries the
parent's mark. "Above imports" subtracts the process's RSS after its imports.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench.core import Section, Settings, Table, median, rate, ratio

NAME = "data-loading"
ROOT = Path(__file__).resolve().parents[1]
FULL, QUICK = (5_000, 2_000), (200, 500)
ITEMS_PER_FILE = {False: 500, True: 50}
LIMIT_BYTES = 2 * 1024**3
MIB = 2**20
TRAINER, UPSTREAM = "trainer load_dataset", "pandas + upstream from_data_frame"

_GENERATE = """
import sys
from pathlib import Path
from trainer.synthetic import generate_dataset
files = generate_dataset(Path(sys.argv[1]), n_items=int(sys.argv[2]), length=int(sys.argv[3]),
                         items_per_file=int(sys.argv[4]))
print(len(files))
"""

_MEASURE = """
import json, sys, time
from pathlib import Path

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0

files = sorted(Path(sys.argv[1]).rglob("*.parquet"))
{imports}
baseline = status("VmRSS")
began = time.perf_counter()
{load}
seconds = time.perf_counter() - began
print(json.dumps({{"seconds": seconds, "peak": status("VmHWM"), "baseline": baseline, "rows": rows,
                  "items": items, "files": len(files)}}))
"""

LOADERS: dict[str, tuple[str, str]] = {
    TRAINER: (
        "from common.runspec import DataSpec\nfrom trainer.data import load_dataset",
        "spec = DataSpec.from_dict({'frequency': 'auto', 'past_covariates': ['temperature'],"
        " 'known_covariates': ['promo']})\n"
        "ds = load_dataset(files, spec, prediction_length=24, backtest_windows=3)\n"
        "rows, items = ds.n_rows, len(ds.item_ids)",
    ),
    UPSTREAM: (
        "import pandas as pd\nfrom chronos.chronos2.preprocess import from_data_frame",
        "df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)\n"
        "df = df.sort_values(['item_id', 'timestamp'], kind='stable')\n"
        "inputs = from_data_frame(df, target_columns=['target'], prediction_length=24,"
        " known_covariates_names=['promo'])\n"
        "rows, items = len(df), len(inputs)",
    ),
}


def _python(script: str, *args: object, timeout: float = 300) -> str:
    """Run ``script`` in a fresh Python; its last line of output.

    Raises:
        RuntimeError: the process failed (with the end of its stderr).
    """
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip()[-800:]}")
    return done.stdout.strip().splitlines()[-1]


def measure(loader: str, data: Path) -> dict[str, float]:
    """One load by ``loader`` in a fresh process: seconds, peak and baseline bytes, rows, items, files."""
    imports, load = LOADERS[loader]
    return json.loads(_python(_MEASURE.format(imports=imports, load=load), data))


def rows_of(name: str, runs: list[dict[str, float]]) -> list[object]:
    """A loader's table row from its runs (medians)."""
    seconds = median([r["seconds"] for r in runs])
    peak = median([r["peak"] for r in runs])
    above = median([r["peak"] - r["baseline"] for r in runs])
    n = int(runs[0]["rows"])
    return [name, seconds, rate(n, seconds), peak / MIB, above / MIB, above / n if n else None,
            "yes" if peak < LIMIT_BYTES else "**no**"]  # fmt: skip


def run(settings: Settings) -> Section:
    """Generate the dataset once, then load it with each loader in turn, ``rounds`` times (at most 2)."""
    items, length = QUICK if settings.quick else FULL
    data = settings.workdir / "data"
    began = time.perf_counter()
    files = int(_python(_GENERATE, data, items, length, ITEMS_PER_FILE[settings.quick]))
    generated = time.perf_counter() - began
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in LOADERS}
    errors: dict[str, str] = {}
    if settings.quick:
        errors[UPSTREAM] = "not measured in the quick run (importing chronos alone takes ~7 s)"
    loaders = [TRAINER] if settings.quick else list(LOADERS)  # quick: importing chronos alone is ~7 s
    for _ in range(min(settings.rounds, 2)):  # a 10M-row load is seconds: two rounds keep the bench short
        for name in loaders:
            if name in errors:
                continue
            try:
                runs[name].append(measure(name, data))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                errors[name] = "failed: " + str(exc).splitlines()[-1][:300]
    return build(items=items, length=length, files=files, generated=generated, runs=runs, errors=errors)


def build(
    *, items: int, length: int, files: int, generated: float,
    runs: dict[str, list[dict[str, float]]], errors: dict[str, str],
) -> Section:  # fmt: skip
    """The section from the measurements (pure: the tests feed it numbers)."""
    loads = Table(
        title=f"Loading {items:,} series x {length:,} points ({items * length:,} rows, {files} files)",
        columns=["loader", "time (s)", "rows/s", "peak RSS (MiB)", "above imports (MiB)",
                 "bytes per row (above imports)", "under 2 GiB"],
    )  # fmt: skip
    for name, done in runs.items():
        if done:
            loads.add(*rows_of(name, done))
    tables = [loads]
    trainer, upstream = runs.get(TRAINER), runs.get(UPSTREAM)
    if trainer and upstream:
        side = Table(
            title="Upstream against the trainer", columns=["measure", "upstream", "trainer", "ratio"]
        )
        t_s, u_s = median([r["seconds"] for r in trainer]), median([r["seconds"] for r in upstream])
        t_m, u_m = median([r["peak"] for r in trainer]), median([r["peak"] for r in upstream])
        side.add("time (s; ratio above 1: the trainer is faster)", u_s, t_s, ratio(u_s, t_s))
        side.add(
            "peak RSS (MiB; ratio above 1: the trainer needs less)", u_m / MIB, t_m / MIB, ratio(u_m, t_m)
        )
        tables.append(side)
    notes = [
        f"the dataset was generated in {generated:.1f} s by a process of its own "
        f"(`trainer.synthetic.generate_dataset`, {files} parquet files with two covariates).",
        "the target: 10M rows load in under 2 GiB of peak RSS (`tests/trainer/test_data_scale.py` "
        "asserts it at full size).",
        "the trainer also validates the data (sorted, no duplicates, one frequency grid, gaps filled, "
        "NaN share) and cuts the training, validation and 3 test windows; `from_data_frame` only "
        "converts a frame the user has already sorted and checked.",
    ]
    notes += [f"{name}: {reason}" for name, reason in errors.items()]
    return Section(
        name=NAME,
        title="Data loading at scale",
        intro="Each loader reads the same synthetic parquet files in a fresh process, interleaved "
        "over the rounds (medians). Peak RSS is the process's own high-water mark (`VmHWM`); "
        "*above imports* subtracts its RSS after importing its libraries.",
        tables=tables,
        notes=notes,
        skipped=None if any(runs.values()) else "every loader failed: " + "; ".join(errors.values()),
    )
