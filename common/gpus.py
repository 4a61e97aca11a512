"""The GPUs and vCPUs of each instance type the product launches: the one table.

One row per type of ``schemas/defs.schema.json`` ``$defs/instance_type`` (a test keeps
them equal), from the Amazon EC2 accelerated-computing instance pages
(https://aws.amazon.com/ec2/instance-types/g4/ and https://aws.amazon.com/ec2/instance-types/g5/,
read :data:`common.pricing.PRICE_TABLE_READ_ON`): g4dn carries NVIDIA T4 (16 GiB), g5
NVIDIA A10G (24 GiB). The trainer runs one training process per GPU (``torchrun``) on the
types with more than one, so the launch's cost and quota messages say how many GPUs a
price buys, and :func:`batch_split_problem` refuses a batch that does not split over them.

The G-family vCPU quotas count vCPUs, not GPUs (EC2 User Guide, "Amazon EC2 service
quotas": "Running On-Demand G and VT instances" and "All G and VT Spot Instance
Requests"), so :attr:`GpuShape.vcpus` is what a quota must reach for one instance.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.pricing import ON_DEMAND_USD_PER_HOUR


@dataclass(frozen=True, kw_only=True)
class GpuShape:
    """What one instance of a type carries.

    Attributes:
        gpus: NVIDIA GPUs (one training process each).
        gpu_model: ``"T4"`` or ``"A10G"``.
        gpu_memory_gib: memory of each GPU.
        vcpus: default vCPUs (what the G-family quotas count).
        memory_gib: the instance's memory (what an AWS Batch job may ask for, less the host's share).
    """

    gpus: int
    gpu_model: str
    gpu_memory_gib: int
    vcpus: int
    memory_gib: int

    def describe(self) -> str:
        """E.g. ``"4 x A10G (24 GiB each), 48 vCPUs"``."""
        return f"{self.gpus} x {self.gpu_model} ({self.gpu_memory_gib} GiB each), {self.vcpus} vCPUs"


def _t4(gpus: int, vcpus: int, memory_gib: int) -> GpuShape:
    return GpuShape(gpus=gpus, gpu_model="T4", gpu_memory_gib=16, vcpus=vcpus, memory_gib=memory_gib)


def _a10g(gpus: int, vcpus: int, memory_gib: int) -> GpuShape:
    return GpuShape(gpus=gpus, gpu_model="A10G", gpu_memory_gib=24, vcpus=vcpus, memory_gib=memory_gib)


SHAPES: dict[str, GpuShape] = {
    "g4dn.xlarge": _t4(1, 4, 16),
    "g4dn.2xlarge": _t4(1, 8, 32),
    "g4dn.4xlarge": _t4(1, 16, 64),
    "g4dn.8xlarge": _t4(1, 32, 128),
    "g4dn.12xlarge": _t4(4, 48, 192),
    "g4dn.16xlarge": _t4(1, 64, 256),
    "g4dn.metal": _t4(8, 96, 384),
    "g5.xlarge": _a10g(1, 4, 16),
    "g5.2xlarge": _a10g(1, 8, 32),
    "g5.4xlarge": _a10g(1, 16, 64),
    "g5.8xlarge": _a10g(1, 32, 128),
    "g5.12xlarge": _a10g(4, 48, 192),
    "g5.16xlarge": _a10g(1, 64, 256),
    "g5.24xlarge": _a10g(4, 96, 384),
    "g5.48xlarge": _a10g(8, 192, 768),
}


def shape(instance_type: str) -> GpuShape | None:
    """The row of ``instance_type`` (``None``: not a type of the table)."""
    return SHAPES.get(instance_type)


def gpu_count(instance_type: str) -> int:
    """GPUs of ``instance_type`` (1 for a type not in the table: one training process)."""
    row = SHAPES.get(instance_type)
    return row.gpus if row is not None else 1


def usd_per_gpu_hour(instance_type: str) -> float | None:
    """The on-demand list price per GPU-hour (``None``: no list price), for comparing types."""
    price = ON_DEMAND_USD_PER_HOUR.get(instance_type)
    row = SHAPES.get(instance_type)
    if price is None or row is None:
        return None
    return round(price / row.gpus, 4)


def batch_split_problem(batch_size: int, gpus: int) -> str | None:
    """Why ``batch_size`` cannot be the effective batch over ``gpus`` data-parallel processes.

    Each process takes ``batch_size / gpus`` series per optimizer step, so the batch must
    split evenly (``None``: it does).
    """
    if gpus <= 1 or batch_size % gpus == 0:
        return None
    lower, upper = batch_size - batch_size % gpus, batch_size - batch_size % gpus + gpus
    hint = f"{lower} or {upper}" if lower > 0 else f"{upper}"
    return (
        f"model.batch_size {batch_size} does not split over the {gpus} GPUs: each GPU takes an equal "
        f"share of every batch; use a multiple of {gpus} (e.g. {hint}) or a single-GPU instance type"
    )
