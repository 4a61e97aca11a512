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


@pytest.mark.row("records-gpu-preflight-injected")
def test_cuda_without_a_gpu_fails_with_no_gpu_whatever_machine_runs_the_test(tmp_path: Path):
    def no_smi() -> dict[str, Any]:  # the nvidia-smi lookup injected: a CPU host, even on a GPU runner
        return check_gpu(which=lambda _: None, runner=smi(0), cuda_probe=lambda: {})

    with pytest.raises(TerminalError, match="no GPU") as info:
        run_preflight(device="cuda", workdir=tmp_path, s3_check=ok_s3, gpu_check=no_smi)
    assert info.value.component == "preflight"


@pytest.mark.row("records-gpu-preflight-injected")
def test_cuda_with_a_gpu_passes_and_records_it_whatever_machine_runs_the_test(tmp_path: Path):
    def a10g() -> dict[str, Any]:
        return check_gpu(
            which=lambda _: "/usr/bin/nvidia-smi",
            runner=smi(0, "NVIDIA A10G, 23028, 550.54\n"),
            cuda_probe=lambda: {"cuda": "12.8", "gpu_count": 1},
        )

    details = run_preflight(device="cuda", workdir=tmp_path, s3_check=ok_s3, gpu_check=a10g)
    assert details["gpu_check"] == "passed" and details["gpu"] == "NVIDIA A10G"
    assert details["device"] == "cuda" and details["s3"] == "reachable"


class _FakeTorch:
    """The few parts of torch that ``_torch_cuda`` reads."""

    __version__ = "2.13.0"

    def __init__(self, available: bool, *, gpus: int = 1, nccl: bool = True) -> None:
        from types import SimpleNamespace

        props = SimpleNamespace(name="NVIDIA H200", total_memory=143_771_287_552)
        self.version = SimpleNamespace(cuda="12.8")
        self.cuda = SimpleNamespace(
            is_available=lambda: available,
            get_device_properties=lambda index: props,
            device_count=lambda: gpus,
        )
        self.distributed = SimpleNamespace(is_available=lambda: True, is_nccl_available=lambda: nccl)


@pytest.mark.row("records-gpu-preflight-injected")
@pytest.mark.parametrize("available", [True, False], ids=["cuda", "no-cuda"])
def test_the_real_cuda_probe_reads_torch(monkeypatch: pytest.MonkeyPatch, available: bool):
    import sys

    from trainer.preflight import _torch_cuda

    monkeypatch.setitem(sys.modules, "torch", _FakeTorch(available))
    if not available:
        with pytest.raises(TerminalError, match=r"torch.cuda.is_available\(\) is False") as info:
            _torch_cuda()
        assert info.value.details == {"check": "torch.cuda", "torch": "2.13.0"}
        return
    assert _torch_cuda() == {
        "gpu": "NVIDIA H200", "gpu_memory_mib": 137110, "gpu_count": 1, "cuda": "12.8", "nccl": True,
    }  # fmt: skip


def test_several_gpus_without_nccl_are_terminal_before_training(monkeypatch: pytest.MonkeyPatch):
    import sys

    from trainer.preflight import _torch_cuda, data_parallel_problem

    monkeypatch.setitem(sys.modules, "torch", _FakeTorch(True, gpus=4, nccl=False))
    with pytest.raises(TerminalError, match="4 GPUs but this torch build has no NCCL") as info:
        _torch_cuda()
    assert info.value.details == {"check": "nccl", "gpu_count": 4}
    assert "\n" not in str(info.value)
    monkeypatch.setitem(sys.modules, "torch", _FakeTorch(True, gpus=4, nccl=True))
    assert _torch_cuda()["gpu_count"] == 4
    assert data_parallel_problem(1, nccl=False) is None  # one GPU, one process: no NCCL needed


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


class _BrokenTorch:
    """A finder that makes ``import torch`` fail as a wheel built for another CUDA does."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name == "torch":
            raise self.error
        return None


@pytest.mark.row("records-gpu-preflight-injected")
@pytest.mark.parametrize(
    "error",
    [
        OSError("libcudart.so.12: cannot open shared object file: No such file or directory"),
        ImportError("undefined symbol: cudaGetDriverEntryPointByVersion"),
    ],
    ids=["oserror", "importerror"],
)
def test_a_torch_that_cannot_import_is_one_terminal_line_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch, error: BaseException
):
    import sys

    from trainer.preflight import _torch_cuda

    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_BrokenTorch(error), *sys.meta_path])
    with pytest.raises(TerminalError) as info:
        _torch_cuda()
    message = str(info.value)
    assert "\n" not in message and message.startswith("no GPU: torch could not be imported")
    assert str(error) in message and "invoke wheelhouse --env=ENV --dir=DIR" in message
    assert "Deep Learning AMI" in message and info.value.component == "preflight"
    assert info.value.details["check"] == "torch import"
