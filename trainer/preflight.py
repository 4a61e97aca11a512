"""Preflight: is this machine fit to train? GPU, disk, S3.

- ``--device cuda``: ``nvidia-smi`` is on PATH and exits 0, ``torch.cuda.is_available()``,
  the GPU's name and memory. Any of these missing is terminal ("no GPU").
- ``--device cpu`` (local mode only): the GPU check is skipped and the reason recorded.
- free disk under the work dir (terminal below ``min_free_gib``).
- S3 reachable: a one-key listing of the run's env prefix (what the instance role
  may list), under the retry policy.

The result is the ``details`` of the ``preflight`` phase in training.json
(:func:`phase`, which the driver runs first).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.errors import TerminalError

if TYPE_CHECKING:
    from trainer.context import RunContext

log = logging.getLogger(__name__)

COMPONENT = "preflight"
NVIDIA_SMI_QUERY = (
    "nvidia-smi",
    "--query-gpu=name,memory.total,driver_version",
    "--format=csv,noheader,nounits",
)
Runner = Callable[..., subprocess.CompletedProcess[str]]


def check_gpu(
    *,
    runner: Runner = subprocess.run,
    which: Callable[[str], str | None] = shutil.which,
    cuda_probe: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The GPU's facts, or a terminal error saying what is missing.

    Raises:
        TerminalError: no ``nvidia-smi``, it fails, or torch sees no CUDA device.
    """
    if which("nvidia-smi") is None:
        raise TerminalError(
            "no GPU: nvidia-smi not found on PATH (is this a GPU instance with the "
            "NVIDIA driver, e.g. the Deep Learning AMI?)",
            component=COMPONENT,
            details={"check": "nvidia-smi"},
        )
    try:
        done = runner(list(NVIDIA_SMI_QUERY), capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise TerminalError(f"no GPU: nvidia-smi could not run ({exc})", component=COMPONENT) from exc
    if done.returncode != 0:
        raise TerminalError(
            f"no GPU: nvidia-smi exited {done.returncode}: {done.stderr.strip()[:300]}",
            component=COMPONENT,
            details={"check": "nvidia-smi", "exit_code": done.returncode},
        )
    first = (done.stdout.strip().splitlines() or [""])[0]
    fields = [f.strip() for f in first.split(",")]
    facts: dict[str, Any] = {"gpu_check": "passed", "nvidia_smi": first}
    if len(fields) >= 3:
        facts["gpu"], facts["driver_version"] = fields[0], fields[2]
        facts["gpu_memory_mib"] = int(fields[1]) if fields[1].isdigit() else None
    facts.update((cuda_probe or _torch_cuda)())
    return facts


def _torch_cuda() -> dict[str, Any]:
    """torch's view of the GPU (the first import of torch on the instance: the bootstrap only checks it
    is installed), or a terminal error when it cannot import or sees no CUDA device."""
    try:
        import torch
    except (ImportError, OSError) as exc:  # e.g. a wheel built for another CUDA, a missing libcudart
        detail = " ".join(str(exc).split())[:300]
        raise TerminalError(
            f"no GPU: torch could not be imported ({type(exc).__name__}: {detail}); rebuild the "
            "wheelhouse for this AMI's CUDA (invoke wheelhouse --env=ENV --dir=DIR) or use the PyTorch "
            "Deep Learning AMI",
            component=COMPONENT,
            details={"check": "torch import", "error": detail},
        ) from None
    if not torch.cuda.is_available():
        raise TerminalError(
            "no GPU: torch.cuda.is_available() is False (driver/CUDA mismatch?)",
            component=COMPONENT,
            details={"check": "torch.cuda", "torch": torch.__version__},
        )
    props = torch.cuda.get_device_properties(0)
    count = torch.cuda.device_count()
    nccl = bool(torch.distributed.is_available() and torch.distributed.is_nccl_available())
    problem = data_parallel_problem(count, nccl=nccl)
    if problem is not None:
        raise TerminalError(problem, component=COMPONENT, details={"check": "nccl", "gpu_count": count})
    return {
        "gpu": props.name,
        "gpu_memory_mib": int(props.total_memory // 2**20),
        "gpu_count": count,
        "cuda": torch.version.cuda,
        "nccl": nccl,
    }


def data_parallel_problem(gpu_count: int, *, nccl: bool) -> str | None:
    """Why this torch cannot train on all ``gpu_count`` GPUs (one process each, NCCL between
    them: :mod:`trainer.distributed`); ``None``: it can, or there is one GPU."""
    if gpu_count <= 1 or nccl:
        return None
    return (
        f"{gpu_count} GPUs but this torch build has no NCCL, which data parallel training needs: "
        "install a CUDA build of torch (NCCL ships inside it; invoke wheelhouse --env=ENV --dir=DIR) "
        "or use a single-GPU instance type"
    )


def check_disk(workdir: Path, *, min_free_gib: float) -> dict[str, Any]:
    """Free space under ``workdir``.

    Raises:
        TerminalError: less than ``min_free_gib`` free.
    """
    free_gib = shutil.disk_usage(workdir).free / 2**30
    if free_gib < min_free_gib:
        raise TerminalError(
            f"only {free_gib:.1f} GiB free under {workdir}, need {min_free_gib:g} GiB "
            "(raise instance.root_volume_gb)",
            component=COMPONENT,
            details={"free_disk_gib": round(free_gib, 2)},
        )
    return {"free_disk_gib": round(free_gib, 2)}


def run_preflight(
    *,
    device: str,
    workdir: Path,
    s3_check: Callable[[], None],
    gpu_check: Callable[[], dict[str, Any]] = check_gpu,
    min_free_gib: float = 1.0,
) -> dict[str, Any]:
    """Every check; the phase details.

    Args:
        device: ``cuda`` or ``cpu``.
        workdir: where data, checkpoints and the model go.
        s3_check: raises if S3 cannot be reached (retried by the caller's policy).
        gpu_check: :func:`check_gpu` (injected in tests).
        min_free_gib: terminal below this.

    Raises:
        TerminalError: a failed check.
    """
    details: dict[str, Any] = {"device": device}
    if device == "cuda":
        details.update(gpu_check())
    else:
        details.update(
            gpu_check="skipped",
            gpu_check_reason="--device cpu: local mode trains on the CPU, "
            "so nvidia-smi and torch.cuda were not checked",
            gpu=None,
        )
    details.update(check_disk(workdir, min_free_gib=min_free_gib))
    s3_check()
    details["s3"] = "reachable"
    log.info("preflight passed: %s", details)
    return details


def phase(ctx: RunContext, details: dict[str, Any]) -> None:
    """The ``preflight`` phase: every check, S3 through the run's retry policy; the GPU into training.json."""
    where = f"s3://{ctx.opts.bucket}/{ctx.paths.logs}"

    def s3_check() -> None:
        ctx.retrier.call(
            lambda: ctx.s3.list_objects_v2(Bucket=ctx.opts.bucket, Prefix=ctx.paths.logs, MaxKeys=1),
            component=COMPONENT,
            action="s3:ListBucket",
            resource=where,
        )

    details.update(run_preflight(device=ctx.opts.device, workdir=ctx.opts.work, s3_check=s3_check))
    ctx.record.instance["gpu"] = details.get("gpu")
