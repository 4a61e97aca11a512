"""RELIABILITY.md rows of the state group (see :mod:`reliability.matrix`): the run's stored state
(checkpoints, results, the state file and its lock) damaged under it."""

from __future__ import annotations

from reliability.matrix import Row

FM = "Fault matrix"

ROWS: tuple[Row, ...] = (
    Row(
        id="disk-full@training",
        section=FM,
        phase="training",
        fault="the disk is full while checkpoint-30 is written (ENOSPC injected into every Python write "
        "under it; mounting a size-limited tmpfs is not allowed)",
        expected="the run fails, saying the disk is full, which checkpoint and to raise root_volume_gb; "
        "the checkpoints uploaded before are intact, verify finds no orphan, the lock released",
    ),
    Row(
        id="truncated-checkpoint@data_sync",
        section=FM,
        phase="data_sync",
        fault="the newest checkpoint in S3 truncated (its weights cut in half) before a resume",
        expected="the resume skips it as truncated and restores the newest valid checkpoint (the one "
        "before); every other artifact intact, verify finds no orphan",
    ),
    Row(
        id="failed-upload-resume@results_sync",
        section=FM,
        phase="results_sync",
        fault="a run that ended with _FAILED_UPLOAD (its model uploads denied) is resumed",
        expected="the resume starts from the final checkpoint (nothing retrained), uploads the results "
        "and succeeds; the _FAILED_UPLOAD sentinel replaced by _SUCCESS, every artifact intact, no orphan",
    ),
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
