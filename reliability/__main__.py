"""``python -m reliability [--out RELIABILITY.md] [--check] [--clear]``: write the report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reliability import record
from reliability.report import Findings, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reliability",
        description="Write RELIABILITY.md from the reliability harness's records "
        f"({record.RESULTS_VAR} or .reliability/results).",
    )
    parser.add_argument("--out", type=Path, default=record.ROOT / "RELIABILITY.md", help="where to write")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 unless every row passed, 0 orphans, 0 lost"
    )
    parser.add_argument("--clear", action="store_true", help="forget every record and exit")
    args = parser.parse_args(argv)
    if args.clear:
        record.clear()
        return 0
    found = Findings.read()
    args.out.write_text(render(found), encoding="utf-8")
    print(f"reliability: wrote {args.out}")
    problems = found.problems()
    if args.check and problems:
        for p in problems:
            print(f"reliability: {p}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
