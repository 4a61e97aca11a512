"""``python -m bench``: run every benchmark side by side and write BENCHMARKS.md.

Machines here are noisy, so each benchmark measures its alternatives in the same
run, interleaved, several rounds, and reports the median of each and their
ratio. All traffic goes to a moto server on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

import logging  # noqa: E402

from bench import cases  # noqa: E402
from bench.report import Result, render  # noqa: E402
from common.exitcodes import ExitCode  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="markdown file to write")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per benchmark")
    parser.add_argument("--only", default=None, help="run only benchmarks whose name contains this")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    results: list[Result] = []
    for name, fn in cases.ALL:
        if args.only and args.only not in name:
            continue
        print(f"== {name}", flush=True)
        result = fn(rounds=args.rounds)
        print(result.summary(), flush=True)
        results.append(result)
    header = (
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}."
    )
    args.out.write_text(render(results, header, extra=cases.extra_sections()))
    print(f"wrote {args.out}")
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
