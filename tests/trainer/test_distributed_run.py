"""A whole local run whose training runs on 2 torchrun ranks: the driver's side is unchanged.

The driver sees the one progress file rank 0 writes: the heartbeat's step, the checkpoint
uploads, the spot watcher's stop (SIGTERM to torchrun, sent on to both ranks) and training.json,
which records how the batch was split. The relaunch after the notice runs on one process (another
GPU count) from the checkpoint the two ranks wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.exitcodes import ExitCode
from schemas import validate
from tests.trainer import test_run_local as run_local
from tests.trainer.test_run_local import PATHS, Staged, acquire, checkpoint_steps, start_in_thread, wait_for
from trainer.context import Deps
from trainer.distributed import NPROC_ENV
from trainer.run import run

# the local run's fixtures (the staged run, the fake IMDS, the synthetic data)
imds_factory, staged_factory, synthetic_files = (
    run_local.imds_factory, run_local.staged_factory, run_local.synthetic_files,
)  # fmt: skip


@pytest.mark.slow
def test_a_spot_notice_stops_both_ranks_and_one_process_resumes_their_checkpoint(
    local_aws: Any, staged_factory: Callable, imds_factory: Callable, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv(NPROC_ENV, "2")
    staged = staged_factory(num_steps=30, checkpoint_interval=50)
    driver, thread, result = start_in_thread(staged, step_delay_s=0.1)
    wait_for(lambda: driver.progress.step >= 5, 240, "training on 2 ranks to reach step 5")
    staged.imds.set_spot_notice()
    saved = wait_for(lambda: checkpoint_steps(staged), 90, "the 2 ranks' checkpoint in S3")
    thread.join(120)
    assert result["code"] == ExitCode.INTERRUPTED
    [step] = saved
    assert 5 <= step < 30
    training = validate("training", staged.json(PATHS.training_log))
    details = {p["name"]: p["details"] for p in training["phases"]}["training"]
    assert details["stop"]["source"] == "spot"
    assert details["distributed"] == {
        "world_size": 2,
        "per_device_batch": 16,
        "grad_accum": 1,
        "effective_batch": 32,
    }
    assert details["final_step"] == step

    monkeypatch.delenv(NPROC_ENV)
    second = imds_factory(
        staged.ec2.run_instances(ImageId="ami-03cf127a", MinCount=1, MaxCount=1, InstanceType="g5.xlarge")[
            "Instances"
        ][0]["InstanceId"]
    )
    acquire(staged.store, second.values["instance-id"])
    resumed = Staged(
        **{**staged.__dict__, "imds": second, "instance_id": second.values["instance-id"],
           "workdir": tmp_path / "second-instance"}
    )  # fmt: skip
    assert run(resumed.options(), Deps()) == 0
    training = validate("training", resumed.json(PATHS.training_log))
    assert training["completion_status"] == "normal" and training["resumed_from_step"] == step
    assert [s for s, _ in training["loss_curve"]] == list(range(1, 31))
    details = {p["name"]: p["details"] for p in training["phases"]}["training"]
    assert details["distributed"] == {
        "world_size": 1,
        "per_device_batch": 16,
        "grad_accum": 2,
        "effective_batch": 32,
    }
    assert validate("sentinel", resumed.json(PATHS.success))["completion_status"] == "normal"
