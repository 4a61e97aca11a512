"""Shared fixtures: every AWS call in the suite goes to a moto server on 127.0.0.1."""

from __future__ import annotations

import os

import pytest

# Before anything imports boto3 or transformers: no real AWS, no hub downloads.
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_PROFILE"):
    os.environ.pop(_var, None)
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
)

import logging  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402

from localaws import moto as local_moto  # noqa: E402

logging.getLogger("werkzeug").setLevel(logging.WARNING)

TEST_BUCKET = "chronos-training-dev-123456789012-us-east-1"


@pytest.fixture(scope="session")
def moto_server():
    """One moto server for the session (reset per test by ``local_aws``)."""
    server = local_moto.start()
    yield server
    server.stop()


@pytest.fixture
def local_aws(moto_server):
    """A clean local AWS: every resource of the previous test is gone, IAM enforcement off.

    Tests that provision an env through ``control.localenv.provision`` switch moto's IAM
    enforcement on; the default session signs with the admin's keys from then on.
    Teardown switches enforcement off and forgets the admin (both are process-wide).
    """
    moto_server.reset()
    yield moto_server
    moto_server.reset()


@pytest.fixture
def s3(local_aws):
    return local_aws.client("s3")


@pytest.fixture
def bucket(s3) -> str:
    """An empty training bucket in the local AWS."""
    s3.create_bucket(Bucket=TEST_BUCKET)
    return TEST_BUCKET


class FakeClock:
    """An aware UTC clock that moves only when a test ticks it."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 14, 5, 2, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    """2026-11-25T14:05:02Z until ticked."""
    return FakeClock()


# -- RELIABILITY.md: the outcome of every test that proves a row (reliability/record.py) ----------
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    rows = [m.args[0] for m in item.iter_markers("row") if m.args]
    # the call's outcome; a failure or skip in setup counts too (the row did not pass)
    if rows and (report.when == "call" or (report.when == "setup" and not report.passed)):
        from reliability import record

        for row in rows:
            record.test_outcome(row, item.nodeid, report.outcome, round(report.duration, 3))


# -- the order files start in ----------------------------------------------------------------------
# The longest files (whole local runs, several each; measured in CI on 2 cores), longest first: they
# start at once and the many short files fill the cores behind them. ``make test`` keeps this order
# (xdist's --no-loadscope-reorder; tests/test_scheduling.py). test_e2e_recovery.py: 4 whole runs with
# recoveries (254 s alone on an idle machine with the 5th, 48 s of it), the longest; then the matrix (CI on
# 2 cores: kill 186 s, SIGKILL 164 s, terminate 158 s), the concurrent launches (134 s) and the rest.
LONGEST_FIRST = (
    "tests/test_e2e_recovery.py",
    "tests/reliability/test_process_faults_kill.py",
    "tests/reliability/test_process_faults_sigkill.py",
    "tests/reliability/test_process_faults_terminate.py",
    "tests/load/test_concurrent_launches.py",
    "tests/test_e2e_local.py",
    "tests/reliability/test_s3_faults_failing.py",
    "tests/reliability/test_state_faults_checkpoint.py",
    "tests/reliability/test_s3_faults_absorbed.py",
    "tests/bench/test_quick.py",
    "tests/load/test_consecutive_runs.py",
    "tests/reliability/test_state_faults_lock.py",
)


def pytest_collection_modifyitems(session, config, items):
    """The longest files first (:data:`LONGEST_FIRST`), then files with more slow tests, then the rest.

    ``make test`` hands whole files to the workers (``--dist loadfile``) in this order, so one
    long file does not start last and run alone. The sort is stable and the same in every
    worker (xdist requires one collection order).
    """
    root = config.rootpath
    rank = {name: n for n, name in enumerate(LONGEST_FIRST)}
    slow: dict[object, int] = {}
    for item in items:
        slow[item.path] = slow.get(item.path, 0) + bool(item.get_closest_marker("slow"))

    def key(item) -> tuple[int, int]:
        name = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        return rank.get(name, len(rank)), -slow[item.path]

    items.sort(key=key)
