"""invoke logs RUN_ID: the newest attempt's trainer log, any attempt's with --attempt, else bootstrap.log.

Each attempt uploads its own trainer log (``common.layout.trainer_log_name``). Before, every
attempt wrote ``trainer.log``: a relaunch after a spot interruption overwrote the log of the
attempt it recovered (its notice, its checkpoint), and `invoke logs` could show only the last.
"""

from __future__ import annotations

import pytest

from common import layout
from common.errors import ConfigError
from control.fetch import read_logs

RUN = "20261125-140502"
PATHS = layout.RunPaths(env="dev", run_id=RUN)


def _put(s3, bucket: str, key: str, text: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=text.encode())


def test_each_attempt_has_its_own_key_and_the_names_read_back():
    assert layout.trainer_log_name(None) == layout.trainer_log_name(1) == "trainer.log"
    assert PATHS.trainer_log_of(1) == PATHS.trainer_log == f"dev/logs/{RUN}/trainer.log"
    assert PATHS.trainer_log_of(3) == f"dev/logs/{RUN}/trainer-attempt-3.log"
    for n in (1, 2, 12):
        assert layout.trainer_log_attempt(layout.trainer_log_name(n)) == n
    for name in ("bootstrap.log", "training.json", "trainer-attempt-0.log", "trainer-attempt-2.log.part"):
        assert layout.trainer_log_attempt(name) is None, name


def test_the_newest_attempts_log_is_shown_and_the_others_named(backend, dev, cli):
    s3 = backend.clients().s3
    _put(s3, dev["bucket"], PATHS.trainer_log_of(1), "attempt one: spot notice, checkpoint-20 saved\n")
    _put(s3, dev["bucket"], PATHS.trainer_log_of(2), "attempt two: resumed from checkpoint-20\n")
    _put(s3, dev["bucket"], PATHS.bootstrap_log, "bootstrap: ok\n")
    logs = read_logs(backend, env="dev", run_id=RUN)
    assert (logs.attempt, logs.attempts, logs.source) == (2, (1, 2), PATHS.trainer_log_of(2))
    assert logs.text.startswith("attempt two") and logs.problem is None
    first = read_logs(backend, env="dev", run_id=RUN, attempt=1)
    assert first.text.startswith("attempt one") and first.source == PATHS.trainer_log

    proc = cli("logs", RUN, "--env=dev", "--local")
    assert proc.returncode == 0, proc.stderr
    assert "attempt two: resumed" in proc.stdout and "attempt one" not in proc.stdout
    assert "logs of attempts 1 too (show one with --attempt=N)" in proc.stdout
    proc = cli("logs", RUN, "--env=dev", "--local", "--attempt=1")
    assert proc.returncode == 0 and "attempt one: spot notice" in proc.stdout, proc.stderr


def test_an_attempt_without_a_log_is_one_line_naming_those_with_one(backend, dev, cli, error_line):
    s3 = backend.clients().s3
    _put(s3, dev["bucket"], PATHS.trainer_log_of(1), "attempt one\n")
    with pytest.raises(ConfigError, match=r"no trainer log of attempt 3 \(attempts with one: 1\)"):
        read_logs(backend, env="dev", run_id=RUN, attempt=3)
    proc = cli("logs", RUN, "--env=dev", "--local", "--attempt=3")
    assert proc.returncode != 0 and "attempts with one: 1" in error_line(proc)
    proc = cli("logs", RUN, "--env=dev", "--local", "--attempt=two")
    assert proc.returncode != 0 and "--attempt='two' is not a whole number" in error_line(proc)


def test_without_a_trainer_log_the_bootstrap_log_is_shown(backend, dev):
    _put(backend.clients().s3, dev["bucket"], PATHS.bootstrap_log, "bootstrap: pip install failed\n")
    logs = read_logs(backend, env="dev", run_id=RUN)
    assert (logs.attempt, logs.attempts, logs.source) == (None, (), PATHS.bootstrap_log)
    assert "pip install failed" in logs.text
    empty = read_logs(backend, env="dev", run_id="20261125-150000")
    assert empty.source is None and "has no log in" in empty.problem
