"""The evaluation's libraries (torch, transformers, Chronos) imported in the background.

The driver first needs torch and Chronos in the evaluation phase, and importing them there
took ~3.5 s on 2 idle cores (more on a loaded host): billed GPU time with the GPU idle, on
every run. Data sync's end starts :func:`start`; the thread waits until the training child
has reported its first step (its own imports and model load are done, so the two do not
compete for the CPU on the critical path; at most ``wait_ready_s``), then imports; the
evaluation phase calls :func:`wait` before its own imports, which then find them loaded.

Why it is safe:

- It imports only third-party roots (:data:`HEAVY`), whose imports never reach the project's
  modules, and only after data sync has imported numpy, pandas and pyarrow in the main
  thread; so no import in the main thread can wait on it while it waits on the main thread
  (the only way Python's per-module import locks deadlock).
- It is not a daemon, so the interpreter never tears itself down under a half-initialised
  extension module (a crash at exit would change the driver's exit code); and it gives up
  (imports nothing more) once the main thread has ended, so a driver that ends before the
  child ever reported waits for nothing but an import already under way.
- It runs at the driver's own CPU priority. A lower one (nice 19) was measured and dropped:
  on a saturated host the thread starved, the evaluation then waited on it, and an unprivileged
  process cannot raise a thread's priority back (RLIMIT_NICE), so the evaluation's imports ran
  at nice 19 (12.5 s instead of 7 s on a 2-core host at load 4).
- A failed import is logged and forgotten: the evaluation's own import raises it again in
  its phase, with its component, as before.

Import state is per process (``sys.modules``), so one warm-up per process is all there is.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

HEAVY = ("torch", "transformers", "chronos.chronos2")
WAIT_READY_S = 60.0  # the longest the thread waits for the child's first step before importing
READY_POLL_S = 0.2
JOIN_S = 600.0  # the evaluation's wait: an import is seconds; past this its own import takes over


class Warmup:
    """One background import of ``modules``, started when ``ready()`` (or after ``wait_ready_s``)."""

    def __init__(
        self,
        modules: Sequence[str] = HEAVY,
        *,
        ready: Callable[[], bool] = lambda: True,
        wait_ready_s: float = WAIT_READY_S,
        importer: Callable[[str], object] = importlib.import_module,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        main_alive: Callable[[], bool] = lambda: threading.main_thread().is_alive(),
    ) -> None:
        self.modules = tuple(modules)
        self.ready, self.wait_ready_s = ready, wait_ready_s
        self.importer, self.sleep, self.monotonic = importer, sleep, monotonic
        self.main_alive = main_alive
        self.imported: list[str] = []
        self.failed: dict[str, str] = {}
        self._thread: threading.Thread | None = None
        self._now = threading.Event()  # the evaluation is waiting: import without waiting for ready()

    def start(self) -> Warmup:
        """Start the thread (not a daemon: see the module doc)."""
        self._thread = threading.Thread(target=self._run, name="import-warmup", daemon=False)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = JOIN_S) -> bool:
        """Wait for the imports (starting them now if ``ready()`` never came, e.g. a resume with no
        step left); ``True`` once the thread has ended (or never started)."""
        self._now.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        end = self.monotonic() + self.wait_ready_s
        while not (self._now.is_set() or self._is_ready()) and self.monotonic() < end and self.main_alive():
            self.sleep(READY_POLL_S)
        started = self.monotonic()
        for name in self.modules:
            if not self.main_alive():  # the driver is exiting: nothing left to warm
                log.info("background import stopped: the driver is exiting")
                break
            try:
                self.importer(name)
            except Exception as exc:  # noqa: BLE001 - the evaluation's own import reports it in its phase
                self.failed[name] = f"{type(exc).__name__}: {exc}"
                log.info("background import of %s failed (evaluation imports it itself): %s", name, exc)
                continue
            self.imported.append(name)
        log.info("imported %s in the background in %.1f s", ", ".join(self.imported) or "nothing",
                 self.monotonic() - started)  # fmt: skip

    def _is_ready(self) -> bool:
        try:
            return bool(self.ready())
        except Exception:  # noqa: BLE001 - a broken readiness probe only means: import now
            return True


_current: Warmup | None = None
_guard = threading.Lock()


def start(
    ready: Callable[[], bool] = lambda: True, *, modules: Sequence[str] = HEAVY, **kwargs: object
) -> Warmup:
    """Start this process's warm-up (once; a second call returns the first)."""
    global _current
    with _guard:
        if _current is None:
            _current = Warmup(modules, ready=ready, **kwargs).start()  # type: ignore[arg-type]
        return _current


def wait(timeout: float | None = JOIN_S) -> None:
    """Wait for this process's warm-up, if one was started (the evaluation phase calls it)."""
    current = _current
    if current is not None and not current.wait(timeout):
        log.warning("background import still running after %.0f s: the evaluation imports itself", timeout)
