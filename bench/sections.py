"""How ``python -m bench`` runs its sections: each in a scratch folder, a failure as a skipped section.

:func:`run_entry` runs one section; :func:`run_entries` runs a list of them, in order, except that a
quick run starts :data:`BESIDE_IN_QUICK` in a spawned process of its own first and lets it run beside
the others (what it runs must be importable by that process: hence this module, not ``__main__``).
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.core import Section, Settings


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One section: its ``--only`` name, its module and the heading used when it cannot run."""

    name: str
    module: str
    title: str


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """A section's result, how long it took, and whether it failed (missing module or raised)."""

    section: Section
    seconds: float
    failed: bool


def run_entry(entry: Entry, *, quick: bool, rounds: int) -> Outcome:
    """Import and run one section in a scratch folder of its own (removed afterwards).

    A missing module or a section that raises gives a skipped section saying why.
    """
    began = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{entry.name}-"))
    try:
        try:
            module = importlib.import_module(entry.module)
        except ModuleNotFoundError as exc:
            if exc.name != entry.module:
                raise
            path = entry.module.replace(".", "/") + ".py"
            return _failed(entry, f"`{path}` is not written yet", began)
        section = module.run(Settings(quick=quick, rounds=rounds, workdir=workdir))
        if not isinstance(section, Section):
            return _failed(
                entry, f"`{entry.module}.run` returned {type(section).__name__}, not a Section", began
            )
        return Outcome(section=section, seconds=time.perf_counter() - began, failed=False)
    except Exception as exc:  # noqa: BLE001 - a section that breaks must not take the others with it
        traceback.print_exc(file=sys.stderr)
        return _failed(entry, f"the section raised {type(exc).__name__}: {_first_line(exc)}", began)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _failed(entry: Entry, reason: str, began: float) -> Outcome:
    section = Section(name=entry.name, title=entry.title, intro="", skipped=reason)
    return Outcome(section=section, seconds=time.perf_counter() - began, failed=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else "(no message)"


# The quick run's longest section: a whole local run, which mostly waits on its instance's own
# processes (boot, the training child's imports, evaluation). Quick mode runs it in a process of its
# own beside the other sections, so `make bench QUICK=1` takes about as long as it (under a minute);
# its timings are then disturbed, which a quick run's are anyway (they measure nothing: `make bench`).
BESIDE_IN_QUICK = ("orchestration",)


def run_entries(entries: list[Entry], *, quick: bool, rounds: int) -> Iterator[tuple[int, Outcome]]:
    """Run ``entries``; ``(index, outcome)`` as each ends. Quick mode runs :data:`BESIDE_IN_QUICK`
    in a spawned process beside the others (one at a time here); a full run is strictly in order."""
    beside = [n for n, e in enumerate(entries) if quick and len(entries) > 1 and e.name in BESIDE_IN_QUICK]
    with contextlib.ExitStack() as stack:
        futures: dict[int, Future[Outcome]] = {}
        if beside:
            pool = stack.enter_context(
                ProcessPoolExecutor(max_workers=len(beside), mp_context=multiprocessing.get_context("spawn"))
            )
            futures = {n: pool.submit(run_entry, entries[n], quick=quick, rounds=rounds) for n in beside}
        for n, entry in enumerate(entries):
            if n not in futures:
                yield n, run_entry(entry, quick=quick, rounds=rounds)
        for n, future in futures.items():
            began = time.perf_counter()
            try:
                yield n, future.result()
            except Exception as exc:  # noqa: BLE001 - the process died: that section failed, not the run
                yield n, _failed(entries[n], f"its process failed: {type(exc).__name__}: {exc}", began)
