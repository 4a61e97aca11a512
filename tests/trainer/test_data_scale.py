"""Loading at scale: 5,000 series x 2,000 points (10M rows in 30 files) in under 2 GB.

Generation and loading each run in their own process. The peak is the loading
process's own high-water mark (``VmHWM``): ``ru_maxrss`` of a child started from a
big process also counts the parent's pages at the fork (Linux carries the
high-water mark across exec), so it reads the generator's peak, not the loader's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ITEMS, LENGTH = 5_000, 2_000
LIMIT_BYTES = 2 * 1024**3

_GENERATE = """
import sys
from pathlib import Path
from trainer.synthetic import generate_dataset
n_items, length = int(sys.argv[2]), int(sys.argv[3])
files = generate_dataset(Path(sys.argv[1]), n_items=n_items, length=length, items_per_file=500)
print(len(files))
"""

_LOAD = """
import json, resource, sys, time
from pathlib import Path
from common.runspec import DataSpec
from trainer.data import load_dataset
files = sorted(Path(sys.argv[1]).rglob("*.parquet"))
spec = DataSpec.from_dict(
    {"frequency": "auto", "past_covariates": ["temperature"], "known_covariates": ["promo"]}
)
began = time.perf_counter()
ds = load_dataset(files, spec, prediction_length=24, backtest_windows=3)
seconds = time.perf_counter() - began
status = Path("/proc/self/status")
hwm = [line.split()[1] for line in status.read_text().splitlines() if line.startswith("VmHWM:")]
maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
peak = int(hwm[0] if hwm else maxrss) * 1024
print(json.dumps({"peak": peak, "maxrss": maxrss * 1024, "seconds": seconds, "files": len(files),
                  "items": len(ds.item_ids), "rows": ds.n_rows, "frequency": ds.frequency,
                  "test_windows": len(ds.test_windows)}))
"""


def _python(script: str, *args: object) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_ten_million_rows_load_in_under_2_gb(tmp_path: Path) -> None:
    began = time.perf_counter()
    files = int(_python(_GENERATE, tmp_path / "data", ITEMS, LENGTH))
    generated = time.perf_counter() - began
    result = json.loads(_python(_LOAD, tmp_path / "data"))
    print(
        f"generated {files} files in {generated:.1f} s; loaded {result['rows']} rows in "
        f"{result['seconds']:.1f} s, peak RSS {result['peak'] / 1024**3:.2f} GiB"
    )
    assert result["files"] == files == 30
    assert result["items"] == ITEMS and result["rows"] == ITEMS * LENGTH
    assert result["frequency"] == "h" and result["test_windows"] == 3
    assert result["peak"] < LIMIT_BYTES, f"peak RSS {result['peak'] / 1024**3:.2f} GiB"
