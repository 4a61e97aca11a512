"""``invoke sweep`` against moto's Batch (jobs are not executed): grid, world, plan, submit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common.errors import ConfigError
from common.state_store import StateStore
from control.sweep import sweep
from control.sweep_plan import Submission

NOW = datetime(2026, 12, 1, 21, 5, 2, tzinfo=UTC)
DATA = "cached-datasets/training-data/"


def grid(tmp_path, text='[base.model]\nnum_steps = 20\n[grid]\n"model.learning_rate" = [1e-4, 3e-4]\n'):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


@pytest.fixture
def staged(s3, bucket):
    s3.put_object(Bucket=bucket, Key=DATA + "2026/11/part-0.parquet", Body=b"PAR1")
    return bucket


def test_a_dry_run_plans_every_point_and_writes_nothing(tmp_path, s3, staged, moto_batch):
    outcome = sweep(
        moto_batch.backend(staged), env="dev", grid_path=grid(tmp_path), dry_run=True, clock=lambda: NOW
    )
    assert outcome.result is None
    assert [m["run_id"] for m in outcome.plan.summary()["members"]] == [
        "20261201-210502-001",
        "20261201-210502-002",
    ]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=staged)["Contents"]] == [
        DATA + "2026/11/part-0.parquet"
    ]


def test_a_sweep_submits_one_job_per_point(tmp_path, s3, staged, local_aws, moto_batch):
    outcome = sweep(moto_batch.backend(staged), env="dev", grid_path=grid(tmp_path), clock=lambda: NOW)
    assert outcome.result.ok and outcome.result.count(Submission.SUBMITTED) == 2
    listed = local_aws.client("batch").list_jobs(jobQueue=moto_batch.queue, jobStatus="SUCCEEDED")[
        "jobSummaryList"
    ]
    assert sorted(j["jobName"] for j in listed) == ["dev-20261201-210502-001", "dev-20261201-210502-002"]
    code_key = outcome.plan.code_upload.key
    assert s3.head_object(Bucket=staged, Key=code_key)["ContentLength"] > 1000  # the real code bundle
    for member in outcome.result.members:
        assert (
            StateStore(s3, staged, "dev", run_id=member.run_id).read().doc["batch"]["job_id"] == member.job_id
        )


def test_a_stack_without_batch_is_refused_before_anything_is_written(
    tmp_path, s3, staged, local_aws, moto_batch
):
    backend = moto_batch.backend(staged)
    backend._outputs = moto_batch.outputs(staged)  # the same stack deployed without `batch: true`
    with pytest.raises(ConfigError, match="this stack has no Batch resources"):
        sweep(backend, env="dev", grid_path=grid(tmp_path), clock=lambda: NOW)
    assert s3.list_objects_v2(Bucket=staged)["KeyCount"] == 1


def test_a_bad_grid_needs_no_aws(tmp_path):
    def no_backend():
        raise AssertionError("the backend was opened for a bad grid")

    with pytest.raises(ConfigError, match="key 'training.learning_rate' is not a run-spec path"):
        sweep(no_backend, env="dev", grid_path=grid(tmp_path, '[grid]\n"training.learning_rate" = [1]\n'))


def test_on_aws_a_sweep_needs_the_wheelhouse_the_jobs_install(tmp_path, s3, staged, moto_batch):
    backend = moto_batch.backend(staged)
    backend.local = False  # as on AWS: the job's entry script installs the wheelhouse
    s3.put_object(Bucket=staged, Key="cached-datasets/python-env/chronos-env.tar.gz", Body=b"packed")
    with pytest.raises(ConfigError, match="no Python environment for the Batch jobs: no wheels under"):
        sweep(backend, env="dev", grid_path=grid(tmp_path), dry_run=True, clock=lambda: NOW)
    s3.put_object(Bucket=staged, Key="cached-datasets/python-env/wheelhouse/x-1-py3-none-any.whl", Body=b"w")
    assert sweep(backend, env="dev", grid_path=grid(tmp_path), dry_run=True, clock=lambda: NOW).result is None
