"""The orchestration and interruption sections: their arithmetic on hand-made records, and a quick run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench import interruption, local_run, orchestration
from bench.core import Section, Settings
from common import runspec

TRAINING = {
    "phases": [
        {"name": "preflight", "started_at": "2026-11-25T14:00:30Z", "duration_s": 0.5},
        {"name": "data_sync", "started_at": "2026-11-25T14:00:31Z", "duration_s": 2.0},
        {"name": "training", "started_at": "2026-11-25T14:00:33Z", "duration_s": 70.0},
        {"name": "evaluation", "started_at": "2026-11-25T14:01:43Z", "duration_s": 10.0},
        {"name": "results_sync", "started_at": "2026-11-25T14:01:53Z", "duration_s": 1.0},
        {"name": "finalize", "started_at": "2026-11-25T14:01:54Z", "duration_s": None},
    ],
    "ledger": {
        "billable_s": 120.0,
        "split_s": {
            "boot_setup": 30.0,
            "data_sync": 2.0,
            "training": 70.0,
            "evaluation": 10.0,
            "upload": 1.0,
            "lost": 0.0,
            "other": 7.0,
        },
    },  # fmt: skip
}
LAUNCHED_AT = 1795615200.0  # 2026-11-25T14:00:00Z


def test_steps_for_scales_the_measured_rate_to_the_seconds_wanted_with_a_floor():
    assert orchestration.steps_for(60.0, 12.5) == 750
    assert orchestration.steps_for(5.0, 1.0) == orchestration.MIN_STEPS
    assert orchestration.steps_for(60.0, 0.0) == orchestration.MIN_STEPS


def test_the_phase_split_adds_up_to_the_wall_time_and_splits_the_training_phase():
    rows = orchestration.phase_split(
        TRAINING, started_at=LAUNCHED_AT, launch_s=4.0, wall_s=130.0, train_call_s=60.0
    )
    parts = dict(rows)
    assert parts["invoke launch (plan, doctor, data check, RunInstances)"] == 4.0
    assert parts["boot and setup (user data: code bundle, Python check, trainer start)"] == 26.0  # 30 - 4
    assert parts["training: the child's train() call"] == 60.0
    assert parts["training: child start (imports, inputs) and checkpoint flush"] == 10.0
    assert parts["evaluation"] == 10.0 and "finalize" not in parts  # no duration: not a part
    assert sum(parts.values()) == pytest.approx(130.0)
    assert parts["the rest (between phases, cleanup, power-off, terminate)"] == pytest.approx(16.5)
    assert orchestration.overhead(rows, top=2) == [
        ("boot and setup (user data: code bundle, Python check, trainer start)", 26.0),
        ("the rest (between phases, cleanup, power-off, terminate)", pytest.approx(16.5)),
    ]


def test_without_the_childs_result_the_training_phase_is_one_part():
    rows = dict(
        orchestration.phase_split(
            TRAINING, started_at=LAUNCHED_AT, launch_s=4.0, wall_s=90.0, train_call_s=None
        )
    )
    assert rows["training"] == 70.0
    assert rows["the rest (between phases, cleanup, power-off, terminate)"] == 0.0  # never negative


def test_the_ledger_split_gives_each_use_its_share_of_the_billable_seconds():
    split = {use: (s, share) for use, s, share in orchestration.ledger_split(TRAINING)}
    assert split["training"] == (70.0, pytest.approx(70 / 120))
    assert split["lost"] == (0.0, 0.0)
    assert orchestration.ledger_split({}) == []


def test_the_first_step_is_the_progress_files_first_step_event(tmp_path):
    progress = tmp_path / "progress.jsonl"
    lines = [
        {"event": "start", "ts": 10.0},
        {"event": "validation", "step": 0, "ts": 11.0},
        {"event": "step", "step": 1, "ts": 12.5},
        {"event": "step", "step": 2, "ts": 13.0},
    ]
    progress.write_text("\n".join(json.dumps(e) for e in lines) + "\nnot json\n")
    assert local_run.first_step_at(progress) == 12.5
    assert local_run.first_step_at(tmp_path / "missing.jsonl") is None


def test_the_boot_timeline_times_each_user_data_step_until_the_driver_starts():
    console = "\n".join(
        [
            "2026-11-25T14:00:02Z INFO control.local_supervisor: boot: bash /x/user-data.sh",
            "2026-11-25T14:00:03Z bootstrap: code bundle s3://b/cached-datasets/scripts/bundle.tar.gz",
            "2026-11-25T14:00:09Z bootstrap: no packed env: the AMI's Python (/opt/pytorch/bin/python3)",
            "2026-11-25T14:00:40Z bootstrap: starting the trainer",
            "2026-11-25T14:00:44Z INFO trainer.run: run 20261125-140000 (env dev) on cpu (local mode)",
            "2026-11-25T14:00:45Z bootstrap: not a step any more",
        ]
    )
    assert orchestration.boot_timeline(console) == [
        ("code bundle ...", "no packed env: the AMI's Python ...", 6.0),
        ("no packed env: the AMI's Python ...", "starting the trainer", 31.0),
        ("starting the trainer", "trainer: run 20261125-140000 (env dev) on cpu (local mode)", 4.0),
    ]
    assert orchestration.boot_timeline("") == []


def test_the_bench_spec_is_a_valid_run_spec_with_the_steps_and_intervals_asked(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(local_run.run_spec(30, recoveries=1, checkpoint_interval=20))
    spec = runspec.load(path).resolved(local=True)
    model = spec.model
    assert (model.num_steps, model.batch_size, model.checkpoint_interval, model.eval_interval) == (
        30,
        32,
        20,
        30,
    )
    assert model.base == runspec.TINY_PRETRAINED and spec.instance.max_recoveries == 1


def _whole(wall_s: float, train_call_s: float) -> orchestration.WholeRun:
    launched = local_run.Launched(
        run_id="20261125-140000", instance_id="i-1", started_at=LAUNCHED_AT, started_mono=0.0, launch_s=4.0
    )
    return orchestration.WholeRun(
        launched=launched, wall_s=wall_s, first_step_s=45.0, training=TRAINING,
        result={"duration_s": train_call_s, "steps_per_s": 10.0}, work=Path("/nowhere"),
        boot=[("code bundle ...", "starting the trainer", 6.0)],
    )  # fmt: skip


@pytest.mark.parametrize(("wall_s", "verdict"), [(74.0, "**met** at 1.23x"), (130.0, "**not met** at 2.17x")])
def test_the_section_judges_the_target_on_the_whole_run_over_the_training_call(wall_s, verdict):
    section = Section(name="orchestration", title="t", intro="i")
    alone = orchestration.Alone(process_s=70.0, train_s=60.0, steps_per_s=10.0, final_step=600)
    orchestration.fill(section, _whole(wall_s, 60.0), alone, steps=600, calibrated=10.0, quick=False)
    summary = section.tables[0]
    rows = {r[0]: r[1:] for r in summary.rows}
    assert rows["whole local run: launch to instance terminated"] == [wall_s, pytest.approx(wall_s / 60)]
    assert rows["training alone: the whole `python -m trainer.train` process"] == [
        70.0,
        pytest.approx(70 / 60),
    ]
    assert rows["launch to the first training step"] == [45.0, 0.75]
    assert verdict in section.notes[0]
    assert [t.title.split(" (")[0] for t in section.tables] == [
        "Whole run vs training alone", "Where the whole run's time goes",
        "Boot and setup, step by step", "The run's ledger",
    ]  # fmt: skip
    if wall_s > 120:  # the parts of a consistent record are the whole run
        assert sum(r[2] for r in section.tables[1].rows) == pytest.approx(100.0)


GAP = {
    "attempt": 1,
    "notice_at": "2026-11-25T14:05:00Z",
    "checkpoint_durable_at": "2026-11-25T14:05:02Z",
    "replacement_launched_at": "2026-11-25T14:05:10Z",
    "first_resumed_step_at": "2026-11-25T14:06:10Z",
    "steps_lost": 0,
}


def test_an_interruptions_latencies_are_the_intervals_between_its_stamps():
    assert interruption.latencies(GAP) == [
        ("notice -> checkpoint durable in S3", 2.0),
        ("notice -> replacement launched", 10.0),
        ("replacement launched -> first resumed step", 60.0),
        ("notice -> first resumed step", 70.0),
    ]
    missing = interruption.latencies({**GAP, "first_resumed_step_at": None})
    assert dict(missing)["notice -> first resumed step"] is None
    assert interruption.in_steps(2.0, 10.0) == 20.0 and interruption.in_steps(None, 10.0) is None


def _trip(model: str, mb: float, legs: tuple[float, float, float, float]) -> interruption.Roundtrip:
    save, up, down, load = legs
    return interruption.Roundtrip(
        model=model, params=1, bytes=int(mb * 1e6), save_s=save, upload_s=up, download_s=down, load_s=load
    )


def test_the_big_checkpoints_resume_is_estimated_by_swapping_the_checkpoint_legs():
    tiny, big = _trip("tiny", 0.7, (0.1, 0.2, 0.3, 0.4)), _trip("big", 1430, (8.0, 20.0, 15.0, 5.0))
    assert big.durable_s == 28.0 and big.restore_s == 20.0
    assert interruption.estimate_resume(70.0, tiny, big) == pytest.approx(70.0 - 1.0 + 48.0)
    assert interruption.estimate_resume(None, tiny, big) is None


def test_the_interruption_section_reports_the_run_and_both_checkpoints():
    section = Section(name="interruption", title="t", intro="i")
    run = {"metrics": {"steps_per_s": 10.0}, "interruptions": [GAP]}
    trips = [_trip("tiny", 0.7, (0.1, 0.2, 0.3, 0.4)), _trip("big", 1430, (8.0, 20.0, 15.0, 5.0))]
    interruption.fill(section, run, trips, quick=False)
    latency, checkpoints = section.tables
    assert latency.rows[0] == ["notice -> checkpoint durable in S3", 2.0, 20.0]
    assert latency.rows[-1] == ["steps lost", 0, None]
    assert [r[0] for r in checkpoints.rows] == ["tiny", "big"]
    assert checkpoints.rows[1][2] == 1430.0 and checkpoints.rows[1][-1] == pytest.approx(28.0 / 120)
    text = " ".join(section.notes)
    assert "86% of it the replacement booting" in text and "about 117 s" in text
    assert (
        "big: 1430.0 MB, 48.0 s round trip, upload dominates (20.0 s); upload 72 MB/s, download 95 MB/s"
        in text
    )
    assert interruption.rate_mb(10**6, 0.0) == 0.0


def test_quick_mode_says_what_it_left_out():
    section = Section(name="interruption", title="t", intro="i")
    interruption.fill(section, None, [_trip("tiny", 0.7, (0.1, 0.2, 0.3, 0.4))], quick=True)
    assert len(section.tables) == 1 and "Quick mode: no interrupted run" in section.notes[-1]


def _ours(root: Path) -> list[str]:
    """Processes whose command line names ``root`` (the servers, supervisors and pumps we start)."""
    found = subprocess.run(["pgrep", "-af", str(root)], capture_output=True, text=True, check=False)
    return [line for line in found.stdout.splitlines() if "pgrep" not in line]


@pytest.mark.slow
@pytest.mark.parametrize("module", [orchestration, interruption])
def test_a_quick_run_fills_the_section_and_leaves_no_process_behind(module, tmp_path):
    section = module.run(Settings(quick=True, rounds=1, workdir=tmp_path))
    assert section.skipped is None and section.tables and all(t.rows for t in section.tables)
    assert any("Quick mode" in n for n in section.notes)
    assert _ours(tmp_path) == []
