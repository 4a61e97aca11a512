"""The state faults' pieces that need no whole run: a torn checkpoint is told apart, the full disk
refuses the writes it should and no other."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from control import local_faults
from trainer.checkpoints import checkpoint_problem, find_latest_complete_checkpoint


def real_checkpoint(root: Path, step: int) -> Path:
    """A checkpoint folder whose files have their real formats (safetensors, torch's zip)."""
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    save_file({"w": np.arange(4096, dtype=np.float32)}, str(folder / "model.safetensors"))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        with zipfile.ZipFile(folder / name, "w") as zf:  # torch.save writes a zip archive
            zf.writestr("archive/data.pkl", b"\x80\x02}q\x00." + bytes(range(256)) * 16)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def cut(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.row("truncated-checkpoint@data_sync")
@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "rng_state.pth"])
def test_a_checkpoint_with_a_truncated_file_is_not_complete_and_the_older_one_is_used(tmp_path, name):
    older, newer = real_checkpoint(tmp_path, 10), real_checkpoint(tmp_path, 20)
    assert checkpoint_problem(newer) is None
    cut(newer / name)
    problem = checkpoint_problem(newer)
    assert problem is not None and name in problem and "truncated" in problem, problem
    assert find_latest_complete_checkpoint(tmp_path) == older


def test_a_truncated_safetensors_header_is_truncated_too(tmp_path):
    folder = real_checkpoint(tmp_path, 10)
    cut(folder / "model.safetensors", keep=0.001)  # inside the header
    problem = checkpoint_problem(folder)
    assert problem is not None and "model.safetensors" in problem, problem


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    prelude = "import control.local_faults as f; f.install_from_env()\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.row("disk-full@training")
def test_the_full_disk_refuses_only_writes_of_matching_paths_and_logs_each(tmp_path, monkeypatch):
    target = tmp_path / "checkpoints" / "checkpoint-30"
    target.mkdir(parents=True)
    log = tmp_path / "faults.log"
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        local_faults.ENV_VAR: "enospc:*/checkpoint-30/*",
        local_faults.LOG_VAR: str(log),
    }
    code = (
        "import errno, json, pathlib, sys\n"
        f"t = pathlib.Path({str(target)!r})\n"
        f"open({str(tmp_path / 'other.txt')!r}, 'w').write('fine')\n"
        "(t / 'config.json').exists()\n"
        "try:\n    (t / 'config.json').write_text('{}')\n"
        "except OSError as e:\n    print(e.errno == errno.ENOSPC, e)\n"
        "try:\n    json.dump({}, open(t / 'trainer_state.json', 'w'))\n"
        "except OSError as e:\n    print(e.errno)\n"
    )
    proc = _run(code, env)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first.startswith("True ") and "No space left on device" in first, first
    assert second == str(errno.ENOSPC)
    assert (tmp_path / "other.txt").read_text() == "fine" and not list(target.iterdir())
    assert [line.split(" ", 1)[1] for line in log.read_text().splitlines()] == [
        str(target / "config.json"),
        str(target / "trainer_state.json"),
    ]


def test_the_fault_variable_must_name_a_kind_and_a_glob():
    with pytest.raises(ValueError, match="enospc"):
        local_faults.parse("enospc:")
    with pytest.raises(ValueError, match="expected one of"):
        local_faults.parse("fill:*")


@pytest.mark.row("disk-full@training")
def test_a_training_child_that_died_of_a_full_disk_says_to_raise_the_root_volume():
    from types import SimpleNamespace

    from trainer.errors import TerminalError
    from trainer.training import outcome

    ctx = SimpleNamespace(
        stops=SimpleNamespace(request=None),
        spec=SimpleNamespace(instance=SimpleNamespace(root_volume_gb=100)),
        opts=SimpleNamespace(env="dev", run_id="20261125-140502"),
    )
    full = "OSError: [Errno 28] No space left on device: '/opt/chronos/work/checkpoint-30/base_model.json'"
    with pytest.raises(TerminalError) as raised:
        outcome(ctx, 1, {"error": full})
    text = str(raised.value)
    assert full in text and "disk is full" in text and "root_volume_gb (now 100 GiB)" in text, text
    assert "invoke launch --env=dev --resume 20261125-140502" in text, text
    with pytest.raises(TerminalError) as other:
        outcome(ctx, 1, {"error": "RuntimeError: CUDA error"})
    assert "disk" not in str(other.value)


@pytest.mark.row("failed-upload-resume@results_sync")
def test_a_failed_upload_says_how_to_resume_it_within_the_sentinels_reason():
    from common.layout import RunPaths
    from trainer.finalize import REASON_MAX, _failed_reason

    paths = RunPaths(env="dev", run_id="20261125-140502")
    short = _failed_reason("access denied: s3:PutObject on s3://b/k", paths)
    assert short.startswith("finalize failed: access denied: s3:PutObject on s3://b/k; once fixed, ")
    assert "`invoke launch --env=dev --resume 20261125-140502`" in short
    long = _failed_reason("x" * 2000, paths)
    assert len(long) <= REASON_MAX and long.endswith("from the final checkpoint") and "…" in long


@pytest.mark.row("failed-upload-resume@results_sync")
def test_a_finalize_that_succeeds_removes_an_earlier_attempts_failed_upload():
    from types import SimpleNamespace

    from common.layout import RunPaths
    from trainer.finalize import _drop_failed_upload

    paths = RunPaths(env="dev", run_id="20261125-140502")
    deleted: list[str] = []
    objects = {paths.failed_upload, paths.success}
    transfers = SimpleNamespace(
        bucket="b",
        exists=lambda key, component: key in objects,
        url=lambda key: f"s3://b/{key}",
        retrier=SimpleNamespace(call=lambda fn, **_: fn()),
        s3=SimpleNamespace(delete_object=lambda Bucket, Key: deleted.append(Key) or objects.discard(Key)),
    )
    _drop_failed_upload(transfers, paths)
    assert deleted == [paths.failed_upload] and objects == {paths.success}
    _drop_failed_upload(transfers, paths)  # none left: nothing deleted
    assert deleted == [paths.failed_upload]
