"""Preflight: a GPU instance must have a working GPU; local mode says why it did not check."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from trainer.errors import TerminalError
from trainer.preflight import check_disk, check_gpu, run_preflight


def ok_s3() -> None:
    return None


def smi(returncode: int, stdout: str = "", stderr: str = ""):
    def runner(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, returncode, stdout, stderr)

    return runner


def test_cpu_mode_skips_the_gpu_check_and_records_why(tmp_path: Path):
    details = run_preflight(device="cpu", workdir=tmp_path, s3_check=ok_s3)
    assert details["gpu_check"] == "skipped" and "--device cpu" in details["gpu_check_reason"]
    assert details["free_disk_gib"] > 0 and details["s3"] == "reachable"


def test_cuda_on_this_cpu_machine_fails_with_no_gpu(tmp_path: Path):
    with pytest.raises(TerminalError, match="no GPU") as info:
        run_preflight(device="cuda", workdir=tmp_path, s3_check=ok_s3)
    assert info.value.component == "preflight"


def test_missing_nvidia_smi_is_named():
    with pytest.raises(TerminalError, match="nvidia-smi not found"):
        check_gpu(which=lambda _: None)


def test_failing_nvidia_smi_reports_its_exit_code():
    with pytest.raises(TerminalError, match="nvidia-smi exited 9: driver mismatch"):
        check_gpu(which=lambda _: "/usr/bin/nvidia-smi", runner=smi(9, stderr="driver mismatch"))


def test_torch_without_cuda_is_terminal():
    def no_cuda() -> dict[str, Any]:
        raise TerminalError("no GPU: torch.cuda.is_available() is False", component="preflight")

    with pytest.raises(TerminalError, match="torch.cuda"):
        check_gpu(which=lambda _: "/x", runner=smi(0, "NVIDIA A10G, 23028, 550.54"), cuda_probe=no_cuda)


def test_a_working_gpu_is_described():
    facts = check_gpu(
        which=lambda _: "/x",
        runner=smi(0, "NVIDIA A10G, 23028, 550.54\n"),
        cuda_probe=lambda: {"cuda": "12.8", "gpu_count": 1},
    )
    assert facts["gpu"] == "NVIDIA A10G" and facts["gpu_memory_mib"] == 23028
    assert facts["driver_version"] == "550.54" and facts["cuda"] == "12.8"


def test_too_little_disk_is_terminal(tmp_path: Path):
    assert check_disk(tmp_path, min_free_gib=0.001)["free_disk_gib"] > 0
    with pytest.raises(TerminalError, match="GiB free"):
        check_disk(tmp_path, min_free_gib=10**9)


def test_unreachable_s3_fails_preflight(tmp_path: Path):
    def down() -> None:
        raise TerminalError("access denied: s3:ListBucket on s3://b/dev/logs/", component="preflight")

    with pytest.raises(TerminalError, match="s3:ListBucket"):
        run_preflight(device="cpu", workdir=tmp_path, s3_check=down)
