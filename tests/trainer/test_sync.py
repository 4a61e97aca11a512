"""S3 transfers: data in against a manifest, checkpoints out (trainer_state.json last) and back in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trainer.checkpoint_sync import CheckpointUploader, remote_checkpoints, restore_checkpoint
from trainer.checkpoints import checkpoint_problem
from trainer.errors import ErrorLog, ExponentialBackoff, Retrier, TerminalError
from trainer.sync import Manifest, sync_data, verify_manifest
from trainer.transfers import RemoteObject, Transfers

PREFIX = "cached-datasets/training-data/"
CKPT = "dev/2026/11/25-140502/checkpoints/"
CHECKPOINT_FILES = ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth")


def transfers(s3: Any, bucket: str) -> Transfers:
    return Transfers(
        s3, bucket, Retrier(ExponentialBackoff(max_retries=2), errors=ErrorLog(), sleep=lambda s: None)
    )


def fake_checkpoint(root: Path, step: int, *, torn: bool = False) -> Path:
    """A folder that passes trainer.checkpoints.checkpoint_problem (unless torn)."""
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    for name in CHECKPOINT_FILES:
        (folder / name).write_bytes(f"{name}-{step}".encode() * 100)
    if not torn:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_data_is_downloaded_in_parallel_and_verified_against_the_listing(
    s3: Any, bucket: str, tmp_path: Path
):
    for n in range(5):
        s3.put_object(Bucket=bucket, Key=f"{PREFIX}2026/0{n + 1}/part-000.parquet", Body=b"p" * (1000 + n))
    s3.put_object(Bucket=bucket, Key=PREFIX + "README.txt", Body=b"not data")
    manifest, files, verified = sync_data(transfers(s3, bucket), PREFIX, tmp_path)
    assert manifest.count == 5 and manifest.total_bytes == sum(1000 + n for n in range(5))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in files) == [
        f"2026/0{n + 1}/part-000.parquet" for n in range(5)
    ]
    assert verified.items() >= {"files": 5, "bytes": manifest.total_bytes, "md5_verified": 5}.items()
    assert verified["engine"] in {"s5cmd", "boto3"}  # trainer.fast_sync; tests/trainer/test_fast_sync.py
    assert manifest.to_dict()["files"][0]["etag"].strip('"')


def test_a_download_that_differs_from_the_manifest_names_the_file(tmp_path: Path):
    (tmp_path / "a.parquet").write_bytes(b"x" * 10)
    manifest = Manifest(prefix="p/", files=(RemoteObject(key="p/a.parquet", size=11, etag='"e"'),))
    with pytest.raises(TerminalError, match="p/a.parquet: downloaded 10 bytes, S3 lists 11"):
        verify_manifest(manifest, tmp_path)
    good_md5 = "9dd4e461268c8034f5c8564e155c67a6"  # md5("x")
    (tmp_path / "b.parquet").write_bytes(b"y")
    manifest = Manifest(prefix="p/", files=(RemoteObject(key="p/b.parquet", size=1, etag=f'"{good_md5}"'),))
    with pytest.raises(TerminalError, match="MD5"):
        verify_manifest(manifest, tmp_path)


def test_no_parquet_under_the_prefix_is_terminal(s3: Any, bucket: str, tmp_path: Path):
    with pytest.raises(TerminalError, match="no .parquet files under s3://"):
        sync_data(transfers(s3, bucket), PREFIX, tmp_path)


def test_checkpoints_upload_in_the_background_with_trainer_state_last(s3: Any, bucket: str, tmp_path: Path):
    order: list[str] = []
    s3.meta.events.register(
        "before-parameter-build.s3.PutObject", lambda params, **_: order.append(params["Key"])
    )
    local = tmp_path / "checkpoints"
    uploader = CheckpointUploader(transfers(s3, bucket), CKPT)
    uploader.submit(fake_checkpoint(local, 10), 10)
    uploader.submit(fake_checkpoint(local, 20), 20)
    assert uploader.close(timeout=60)
    assert sorted(uploader.uploaded) == [10, 20] and not uploader.failures
    for step in (10, 20):
        mine = [k for k in order if f"/checkpoint-{step}/" in k]
        assert len(mine) == 5 and mine[-1].endswith("trainer_state.json")
    assert not (local / "checkpoint-10").exists() and (local / "checkpoint-20").exists()  # pruned once safe


def test_restore_takes_the_newest_complete_checkpoint_and_skips_torn_ones(
    s3: Any, bucket: str, tmp_path: Path
):
    t = transfers(s3, bucket)
    source = tmp_path / "src"
    for step, torn in ((10, False), (20, False), (30, True)):
        folder = fake_checkpoint(source, step, torn=torn)
        t.upload_tree(folder, f"{CKPT}checkpoint-{step}/", component="test")
    assert sorted(remote_checkpoints(t, CKPT)) == [10, 20]
    local = tmp_path / "train" / "checkpoints"
    assert restore_checkpoint(t, CKPT, local, checkpoint_problem) == 20
    assert checkpoint_problem(local / "checkpoint-20") is None and not (local / "checkpoint-30").exists()


def test_restore_falls_back_when_the_newest_is_not_resumable(s3: Any, bucket: str, tmp_path: Path):
    t = transfers(s3, bucket)
    for step in (10, 20):
        t.upload_tree(fake_checkpoint(tmp_path / "src", step), f"{CKPT}checkpoint-{step}/", component="test")
    s3.delete_object(Bucket=bucket, Key=f"{CKPT}checkpoint-20/optimizer.pt")
    local = tmp_path / "local"
    assert restore_checkpoint(t, CKPT, local, checkpoint_problem) == 10
    assert not (local / "checkpoint-20").exists()


def test_restore_with_nothing_in_s3_is_a_fresh_start(s3: Any, bucket: str, tmp_path: Path):
    assert restore_checkpoint(transfers(s3, bucket), CKPT, tmp_path, checkpoint_problem) is None


def test_training_data_is_loaded_as_the_validated_run_spec_describes_it(small_files) -> None:
    """One DataSpec: the run spec's data section (schema defaults filled), the horizon from its model."""
    from common import runspec
    from trainer.sync import load_training_data

    spec = runspec.from_dict({"data": {"past_covariates": ["temperature"], "known_covariates": ["promo"]}})
    dataset = load_training_data(small_files, spec)
    # the schema's default frequency is "auto": inferred from the hourly timestamps
    assert dataset.spec is spec.data and dataset.frequency == "h" and dataset.frequency_source == "inferred"
    assert dataset.prediction_length == spec.model.prediction_length == 24  # the schema's default horizon
    assert len(dataset.test_windows) == spec.model.backtest_windows == 3  # the schema's default K
    assert dataset.test_windows[-1].future.shape == (8, 24)
    with pytest.raises(TerminalError, match="invalid training data.*missing column"):
        load_training_data(small_files, runspec.from_dict({"data": {"target_column": "sales"}}))
