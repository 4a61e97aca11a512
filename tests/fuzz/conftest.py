"""Hypothesis profiles for the property-based tests, and the count of examples they ran.

``ci`` (the default: ``make test``, CI) keeps the whole folder well under a minute on a
loaded core and draws the same examples each run; ``fuzz`` (``make fuzz``,
``HYPOTHESIS_PROFILE=fuzz``) multiplies every test's
examples so the folder runs at least :data:`FUZZ_MINIMUM` in all, and fails the session
when it ran fewer. Each test scales its own ``max_examples`` with :func:`fuzzkit.scaled`
(a slow example, one that starts an ``invoke`` task, gets fewer). Every example is
counted with ``record.count(FUZZ_EXAMPLES)``; the terminal summary prints the total
(summed over the xdist workers).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))  # the tests here import fuzzkit

import fuzzkit  # noqa: E402

FUZZ_MINIMUM = 10_000
_COMMON = dict(
    deadline=None,  # the machine is loaded: time is not a property
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
# ``ci`` draws the same examples every run (derandomize): a red CI then means the change broke
# something, not that this run's random draw found an old bug (two CI runs were red for that).
# The search for new cases is ``make fuzz``'s, with fresh random examples each time.
settings.register_profile("ci", max_examples=fuzzkit.CI_EXAMPLES, derandomize=True, **_COMMON)
settings.register_profile(
    "fuzz", max_examples=fuzzkit.CI_EXAMPLES * fuzzkit.FUZZ_FACTOR, derandomize=False, **_COMMON
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_sessionfinish(session, exitstatus):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand the count to the controller
        workeroutput["fuzz_examples"] = fuzzkit.COUNTED["examples"]
        return
    _check_minimum(session)


def pytest_testnodedown(node, error):
    fuzzkit.COUNTED["examples"] += int(getattr(node, "workeroutput", {}).get("fuzz_examples", 0))


def _check_minimum(session) -> None:
    ran = fuzzkit.COUNTED["examples"]
    full = settings().max_examples >= fuzzkit.CI_EXAMPLES * fuzzkit.FUZZ_FACTOR
    selected = session.config.option.keyword or session.config.option.markexpr  # a part only
    if full and not selected and 0 < ran < FUZZ_MINIMUM:
        session.exitstatus = 1
        session.config._fuzz_short = ran


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    ran = fuzzkit.COUNTED["examples"]
    if ran:
        profile = os.environ.get("HYPOTHESIS_PROFILE", "ci")
        terminalreporter.write_line(f"fuzz: {ran} hypothesis examples run (profile {profile})")
    short = getattr(config, "_fuzz_short", None)
    if short is not None:
        terminalreporter.write_line(
            f"fuzz: only {short} examples ran; the fuzz profile must run at least {FUZZ_MINIMUM}", red=True
        )
