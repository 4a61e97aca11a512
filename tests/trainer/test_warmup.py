"""The evaluation's libraries imported in the background (trainer/warmup.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from trainer import warmup

ROOT = Path(__file__).resolve().parents[2]


class FakeTime:
    """A monotonic clock that advances only when the warm-up sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_nothing_is_imported_until_the_child_reports_then_every_module_in_order():
    imported: list[str] = []
    ready = threading.Event()
    polled = threading.Event()

    def probe() -> bool:
        polled.set()
        return ready.is_set()

    w = warmup.Warmup(("a", "b"), ready=probe, importer=imported.append, sleep=lambda s: ready.wait(s))
    w.start()
    polled.wait(5)
    assert imported == []  # the child is still importing: the CPU is its
    ready.set()
    assert w.wait(5)
    assert imported == ["a", "b"] and w.imported == ["a", "b"] and w.failed == {}


def test_without_any_event_it_imports_after_wait_ready_s_anyway():
    clock, imported = FakeTime(), []
    w = warmup.Warmup(
        ("torch",), ready=lambda: False, wait_ready_s=30.0, importer=imported.append,
        sleep=clock.sleep, monotonic=clock.monotonic,
    )  # fmt: skip
    w.start()
    assert w.wait(5)
    assert imported == ["torch"] and clock.now >= 30.0


def test_a_failing_import_or_probe_is_recorded_and_never_raises():
    def importer(name: str) -> None:
        if name == "broken":
            raise ImportError("No module named 'broken'")

    def probe() -> bool:
        raise RuntimeError("probe broke")

    w = warmup.Warmup(("broken", "fine"), ready=probe, importer=importer).start()
    assert w.wait(5)
    assert w.imported == ["fine"]
    assert w.failed == {"broken": "ImportError: No module named 'broken'"}


def test_once_the_main_thread_has_ended_it_imports_nothing_more():
    imported: list[str] = []
    w = warmup.Warmup(("torch", "transformers"), importer=imported.append, main_alive=lambda: False)
    assert w.start().wait(5)
    assert imported == []


def test_a_driver_that_ends_before_the_child_reports_exits_at_once_with_its_own_code():
    """The thread is not a daemon (no teardown under a half-imported torch), yet it does not keep a
    process alive for WAIT_READY_S: it sees the main thread end and leaves without importing."""
    code = (
        "import sys\n"
        "from trainer import warmup\n"
        "w = warmup.start(ready=lambda: False, modules=('torch',))\n"
        "sys.exit(7)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 7, done.stderr
    check = (
        "import atexit, sys\n"
        "from trainer import warmup\n"
        "w = warmup.start(ready=lambda: False, modules=('torch',))\n"
        "atexit.register(lambda: print('torch' in sys.modules, w.wait(0)))\n"  # after the thread ended
    )
    out = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert out.stdout.strip() == "False True", out.stderr  # the thread ended without importing torch


def test_the_real_modules_are_loaded_when_the_evaluation_waits_and_start_is_once_per_process():
    code = (
        "import sys\n"
        "from trainer import warmup\n"
        "first = warmup.start()\n"
        "assert warmup.start(ready=lambda: False) is first\n"
        "warmup.wait()\n"
        "print(sorted(m for m in warmup.HEAVY if m in sys.modules), first.failed)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['chronos.chronos2', 'torch', 'transformers'] {}"


def test_data_syncs_probe_waits_for_the_childs_first_step_not_for_the_spec_or_its_start_event():
    """startup sets total_steps from the spec and the child's start event comes before its model
    load: only a step event means the child's imports and model load no longer need the CPU."""
    from trainer.data_sync import child_stepped
    from trainer.supervisor import ProgressEvents
    from trainer.watcher import Progress

    progress = Progress()
    progress.update(total_steps=300)  # what trainer.startup does before the child exists
    events = ProgressEvents(progress, [], on_checkpoint=lambda path, step: None)
    assert not child_stepped(progress)
    events({"event": "start", "total": 300, "start_step": 0})
    assert not child_stepped(progress)
    events({"event": "step", "step": 1, "total": 300, "loss": 1.5, "ts": 1.0})
    assert child_stepped(progress)


def test_the_imports_keep_the_drivers_priority():
    """Not lowered: an unprivileged thread cannot raise its priority back once the evaluation waits on it."""
    import os

    def own_nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    main_nice, seen = own_nice(), []
    w = warmup.Warmup(("torch",), importer=lambda name: seen.append(own_nice())).start()
    assert w.wait(5)
    assert seen == [main_nice]


def test_the_evaluation_waiting_starts_the_imports_at_once_when_no_step_ever_came():
    """A resume with no step left reports no step: the evaluation must not wait out WAIT_READY_S."""
    imported: list[str] = []
    polled = threading.Event()

    def probe() -> bool:
        polled.set()
        return False

    w = warmup.Warmup(
        ("torch",), ready=probe, wait_ready_s=1e9, importer=imported.append,
        monotonic=lambda: 0.0, sleep=lambda s: threading.Event().wait(0.01),
    )  # fmt: skip
    w.start()
    polled.wait(5)
    assert imported == []
    assert w.wait(5)
    assert imported == ["torch"]
