"""The sweep commands at the CLI edge: one-line errors and exit codes, and what the tables say."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from invoke import Program
from rich.console import Console

from control.cli import sweeps as render
from control.sweep import sweep
from control.sweep_kill import kill_sweep
from control.sweep_status import sweep_view

NOW = datetime(2026, 12, 1, 21, 5, 2, tzinfo=UTC)


def invoke(*args: str) -> int:
    import tasks

    try:
        Program(namespace=tasks.ns, name="invoke", binary="invoke").run(["invoke", *args], exit=True)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["sweep", "--grid=nope.toml"], "grid file nope.toml not found"),
     (["sweep", "--grid="], "--grid was given an empty value"),
     (["kill", "--run-id=20261201-210502"], "is a single run, not a sweep member"),
     (["kill", "--sweep=2026-12-01"], "sweep id '2026-12-01'"),
     (["monitor", "--sweep=x"], "--sweep: sweep id 'x'")],
)  # fmt: skip
def test_a_user_error_is_one_line_and_exit_2(capsys, monkeypatch, tmp_path, args, expected):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHRONOS_STACK_OUTPUTS", str(tmp_path / "none-{env}.json"))
    assert invoke(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err, err


def test_the_tables_name_each_member_its_job_and_the_next_command(tmp_path, s3, bucket, moto_batch):
    s3.put_object(Bucket=bucket, Key="cached-datasets/training-data/part-0.parquet", Body=b"PAR1")
    path = tmp_path / "sweep.toml"
    path.write_text('[grid]\n"model.learning_rate" = [1e-4, 3e-4]\n')
    backend = moto_batch.backend(bucket)
    out = Console(record=True, width=250)
    outcome = sweep(backend, env="dev", grid_path=path, clock=lambda: NOW)
    render.sweep(out, outcome, local=True, as_json=False)
    text = out.export_text()
    assert "submitted 2 of 2 points" in text and "learning_rate=0.0001" in text
    assert "invoke monitor --env=dev --local --sweep 20261201-210502 --follow" in text
    moto_batch.hold(outcome.result.members[0].job_id, "RUNNABLE")
    render.sweep_view(out, sweep_view(backend, env="dev", sweep_id="20261201-210502"), as_json=False)
    text = out.export_text()
    assert "20261201-210502-001" in text and "RUNNABLE" in text and "1 initialization, 1 stale" in text
    result = kill_sweep(backend, env="dev", sweep_id="20261201-210502", grace_s=0, sleep=lambda s: None)
    render.sweep_kill(out, result, local=True)
    text = out.export_text()
    assert "job stops requested" in text and "cancel requested (RUNNABLE)" in text
    assert "check with: invoke verify --env=dev --local" in text


def test_a_sweep_member_is_not_resumed_as_a_single_run():
    from common.errors import ConfigError
    from control.launch import launch

    def no_backend():
        raise AssertionError("the backend was opened")

    with pytest.raises(ConfigError, match="20261201-210502-002 is a member of sweep 20261201-210502"):
        launch(no_backend, env="dev", resume="20261201-210502-002")
