"""Exit codes: one meaning per number, for every command and process of the product.

The trainer on the instance, its training child, and every ``invoke`` task exit with
these, so a script can read any of them the same way (the README's table is this one)::

    0 OK           success (``monitor``: the run succeeded or is still running)
    1 FAILED       the run failed; ``verify`` found orphans; ``launch`` found no capacity
    2 USAGE        an error you can fix (bad config or run spec; the message says how)
    3 INTERRUPTED  the run was interrupted (spot notice, max runtime, OS shutdown): resumable
    4 KILLED       the run was stopped by ``invoke kill``
    5 STALE        ``monitor``: the instance died or hangs without finishing the run
    6 NO_RUN       ``monitor``: no run yet in this env
    7 BAD_DATA     training child: the training data failed validation
    8 STOPPED      training child: stopped on request (its supervisor knows why)
  130 CTRL_C       the user pressed Ctrl-C
"""

from __future__ import annotations

from enum import IntEnum

from common.status import CompletionStatus


class ExitCode(IntEnum):
    """Process exit codes (see the module docstring for each meaning)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    INTERRUPTED = 3
    KILLED = 4
    STALE = 5
    NO_RUN = 6
    BAD_DATA = 7
    STOPPED = 8
    CTRL_C = 130

    @classmethod
    def for_completion(cls, completion: CompletionStatus) -> ExitCode:
        """The exit code of a run that ended with ``completion``."""
        return _BY_COMPLETION[CompletionStatus(completion)]


_BY_COMPLETION = {
    CompletionStatus.NORMAL: ExitCode.OK,
    CompletionStatus.FAILED: ExitCode.FAILED,
    CompletionStatus.INTERRUPTED: ExitCode.INTERRUPTED,
    CompletionStatus.KILLED: ExitCode.KILLED,
}
