"""RELIABILITY.md rows of the state group (see :mod:`reliability.matrix`): the run's stored state
(checkpoints, results, the state file and its lock) damaged under it."""

from __future__ import annotations

from reliability.matrix import Row

FM = "Fault matrix"

ROWS: tuple[Row, ...] = (
    Row(
        id="corrupt-state@training",
        section=FM,
        phase="training",
        fault="the state file overwritten with bytes that are not JSON while the run trains",
        expected="the trainer stops the run failed, saying the state file is corrupt and to clear it "
        "with `invoke verify --fix`; its instance powers off; verify names the corrupt lock, "
        "`verify --fix` clears it; then no orphan, the checkpoints intact",
    ),
    Row(
        id="schema-invalid-state@launch",
        section=FM,
        phase="launch",
        fault="a state file that is JSON but not a valid state document (a run id that is no date, "
        "a status that does not exist)",
        expected="`invoke launch`, `monitor` and `kill` refuse with one line naming the file, the JSON "
        "path and `invoke verify --fix`; nothing is launched; `verify --fix` clears it; the next "
        "launch is no longer refused",
    ),
    Row(
        id="stale-lock@launch",
        section=FM,
        phase="launch",
        fault="a lock whose instance is gone (terminated while the recovery handler was not running)",
        expected="`invoke launch` is refused naming the gone instance and `invoke verify --fix`; "
        "verify calls the lock stale, `verify --fix` clears it; no orphan; the next launch is no "
        "longer refused",
    ),
)
