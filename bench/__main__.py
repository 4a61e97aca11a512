"""``python -m bench``: every benchmark side by side, and BENCHMARKS.md written from them.

Machines here are noisy, so each section measures its alternatives in the same run,
interleaved, several rounds, and reports medians and ratios. Each section is a module
exposing ``run(settings) -> Section`` (:mod:`bench.core`), imported only when it runs
and given a scratch folder of its own; one that is missing or raises becomes a skipped
section saying why (``--strict``: and the exit code is non-zero).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import logging  # noqa: E402

from bench import report  # noqa: E402
from bench.sections import Entry, Outcome, run_entries, run_entry  # noqa: E402, F401 - tests use them
from common.exitcodes import ExitCode  # noqa: E402

TITLE = "Benchmarks"


SECTIONS: tuple[Entry, ...] = (
    Entry(name="data-sync", module="bench.transfer", title="Data sync"),
    Entry(name="orchestration", module="bench.orchestration", title="Orchestration overhead"),
    Entry(name="interruption", module="bench.interruption", title="Interruption and recovery"),
    Entry(name="training", module="bench.training", title="Training speed"),
    Entry(name="control-plane", module="bench.control_plane", title="Control-plane cost"),
    Entry(name="data-loading", module="bench.loading", title="Data loading at scale"),
    Entry(name="quality", module="bench.quality", title="Model quality"),
    Entry(name="gpu", module="bench.gpu", title="GPU"),
)


def selected(only: str | None) -> list[Entry]:
    """The sections to run: every one, or those whose name contains ``only``."""
    return [e for e in SECTIONS if only is None or only in e.name]


PACKAGES = ("torch", "chronos-forecasting", "transformers", "boto3", "moto", "awscli", "awscrt", "pyarrow")
TOOLS = {"s5cmd": ("s5cmd", "version"), "SeaweedFS": ("weed", "version")}


def machine_lines() -> list[str]:
    """The machine and the versions of everything measured, as markdown bullets."""
    mem = _proc_field("/proc/meminfo", "MemTotal")
    mem_gib = f"{int(mem.split()[0]) / 2**20:.1f} GiB" if mem else "unknown"
    cpu = _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown"
    versions = [f"{name} {_version(name)}" for name in PACKAGES]
    tools = [f"{label} {_tool_version(*argv)}" for label, argv in TOOLS.items()]
    return [
        f"- machine: {platform.platform()}, {os.cpu_count()} cores ({cpu}), {mem_gib} memory, GPU: {_gpu()}",
        f"- versions: Python {platform.python_version()}, " + ", ".join(versions + tools),
    ]


def _proc_field(path: str, key: str) -> str | None:
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return None


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def tool_path(name: str) -> str | None:
    """A command next to this Python (the venv's ``bin``) or on PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.is_file() else shutil.which(name)


def _tool_version(name: str, *args: str) -> str:
    exe = tool_path(name)
    if exe is None:
        return "not installed"
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({type(exc).__name__})"
    found = re.search(r"v?\d+\.\d+(\.\d+)?", done.stdout + done.stderr)
    return found.group(0).lstrip("v") if found else "unknown"


def _gpu() -> str:
    try:
        import torch
    except ImportError:
        return "unknown (no torch)"
    if not torch.cuda.is_available():
        return "none"
    return f"{torch.cuda.get_device_name(0)} x {torch.cuda.device_count()} (CUDA {torch.version.cuda})"


def preamble(*, quick: bool, rounds: int, began: datetime) -> list[str]:
    """How the file was made (machine, versions, date, size of the run) and how to reproduce it."""
    kind = (
        "quick (`make bench QUICK=1`: the smallest run of every path; the orchestration section in a "
        "process of its own beside the others)"
        if quick
        else "full (`make bench`: the sections one after the other)"
    )
    return [
        "Written entirely by `python -m bench`: every number below comes from one run of the "
        "benchmark code in `bench/`. Each comparison measures its alternatives in the same run, "
        "interleaved, several rounds, and reports medians and their ratio; compare ratios, not "
        "absolute values across machines or runs.",
        "",
        f"- run: {kind}, {rounds} interleaved round(s), started {began:%Y-%m-%d %H:%M} UTC",
        *machine_lines(),
        "",
        "Reproduce: `make bench` (the full run, under 10 minutes on 2 cores) or `make bench QUICK=1` "
        "(under a minute; CI runs it); `python -m bench --only NAME` runs one section "
        "(`" + "`, `".join(e.name for e in SECTIONS) + "`).",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smallest run of every path (CI)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5; quick: 1)")
    parser.add_argument("--only", default=None, help="run only sections whose name contains this")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="markdown file to write")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a section is missing or raises")
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 5)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    began = datetime.now(UTC)
    entries = selected(args.only)
    if not entries:
        parser.error(f"no section name contains {args.only!r}")
    outcomes: dict[int, Outcome] = {}
    wall = time.perf_counter()
    for n, outcome in run_entries(entries, quick=args.quick, rounds=rounds):
        outcomes[n], s = outcome, outcome.section
        state = f"skipped: {s.skipped}" if s.skipped else f"{len(s.tables)} table(s)"
        print(f"== [{n + 1}/{len(entries)}] {entries[n].name} ({entries[n].module})", flush=True)
        print(f"   {outcome.seconds:.1f} s, {state}", flush=True)
    wall = time.perf_counter() - wall
    ordered = [outcomes[n] for n in range(len(entries))]
    sections = [o.section for o in ordered]
    timings = [
        report.Timing(name=s.name, title=s.title, seconds=o.seconds, skipped=s.skipped)
        for o, s in zip(ordered, sections, strict=True)
    ]
    failed = [e.name for e, o in zip(entries, ordered, strict=True) if o.failed]
    text = report.document(
        title=TITLE, preamble=preamble(quick=args.quick, rounds=rounds, began=began),
        sections=sections, timings=timings,
    )  # fmt: skip
    args.out.write_text(text)
    total = sum(t.seconds for t in timings)
    print(f"wrote {args.out} ({len(sections)} sections: {total:.1f} s in all, {wall:.1f} s wall)", flush=True)
    if failed:
        print(f"sections missing or broken: {', '.join(failed)}", file=sys.stderr, flush=True)
        if args.strict:
            return ExitCode.FAILED
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
