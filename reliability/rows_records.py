"""RELIABILITY.md rows of the records group (see :mod:`reliability.matrix`).

Records say only what was observed: an action is ``succeeded`` once a describe confirmed
it, a state that could not be read is "unknown" with its reason, and no test leans on the
machine it runs on.
"""

from __future__ import annotations

from reliability.matrix import Row

_S = "Records"

ROWS: tuple[Row, ...] = (
    Row(
        id="records-action-requested",
        section=_S,
        fault="a cleanup action the API accepted but no describe has confirmed",
        expected="cleanup_status.json records it `requested` with what the describe saw; older documents "
        "(without `requested`/`observed`) still validate",
    ),
    Row(
        id="records-verify-fix-confirmed",
        section=_S,
        fault="verify --fix terminates an instance, deletes a volume and clears a stale lock while "
        "DescribeInstances/DescribeVolumes still show them",
        expected="each is `succeeded` only once a describe (or read) shows it terminated / gone; "
        "until then `requested`, and the fix output says so",
    ),
    Row(
        id="records-verify-fix-each-instance",
        section=_S,
        fault="verify --fix terminates several orphan instances of a run with a stale lock",
        expected="the run's cleanup_status.json names the lock's instance as the run's and records a "
        "terminate for each instance it terminated, never the first of the list as the run's",
    ),
    Row(
        id="records-kill-confirmed",
        section=_S,
        fault="invoke kill terminates an instance that DescribeInstances still shows running, "
        "and removes a state file",
        expected="terminate is `requested` (not `succeeded`) until a describe shows it terminated; "
        "the state file is recorded removed only once a read finds it gone",
    ),
    Row(
        id="records-cleanup-confirmed",
        section=_S,
        fault="the trainer's cleanup deletes the state file (the delete answers but the file is still "
        "there) and powers off",
        expected="delete is `succeeded` and state_file_removed true only once a read finds the file "
        "gone; the poweroff is `requested` (the instance cannot observe its own end)",
    ),
    Row(
        id="records-monitor-state-unknown",
        section=_S,
        fault="DescribeInstances denied or throttled while monitor watches a run",
        expected="the view says `state unknown: <reason>`; with an old heartbeat the outcome is STALE "
        "(exit code STALE), never a silent running",
    ),
    Row(
        id="records-deadline-from-launch",
        section=_S,
        fault="the trainer cannot read the state file when it sets its max-runtime deadline",
        expected="the deadline counts from the launch record's launched_at (then the run id's time), "
        "never from now",
    ),
    Row(
        id="records-status-after-write",
        section=_S,
        fault="an action reported before it happened or was confirmed: the poweroff in cleanup_status.json "
        "written just before it, `terminated X` printed as soon as TerminateInstances answered",
        expected="nothing is reported done before it was observed done: the poweroff reads `requested`, kill "
        "and verify --fix say `requested termination of X` until a describe shows it terminated",
    ),
    Row(
        id="records-gpu-preflight-injected",
        section=_S,
        fault="GPU preflight on a machine with or without a GPU",
        expected="the tests inject the nvidia-smi runner and the CUDA probe (the real probe runs against "
        "a fake torch), so they pass the same on a CPU laptop and a GPU host",
    ),
    Row(
        id="records-no-wall-clock",
        section=_S,
        fault="tests timing the machine (a loaded CI core)",
        expected="no test asserts an elapsed wall-clock time; latencies come from the run's own timestamps",
    ),
    Row(
        id="records-run-id-distinct",
        section=_S,
        fault="two launches in one env within one second",
        expected="the second launch is refused with one line naming the run id and what to do; it takes no "
        "lock and the first run's outputs stay as they were (a concurrent pair: the lock refuses one)",
    ),
    Row(
        id="records-recovery-terminate-observed",
        section=_S,
        fault="the recovery handler terminates an instance and releases a lock while a describe still "
        "shows the instance shutting-down or a read still finds the state file",
        expected="its cleanup_status.json records each `requested` with what the describe or read saw "
        "(`succeeded` only once they show it ended / gone) and does not claim the state file removed",
    ),
)
