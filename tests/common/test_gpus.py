"""The GPU table: one row per launchable instance type, what the quota and cost messages read."""

from __future__ import annotations

import json
from pathlib import Path

from common.gpus import SHAPES, batch_split_problem, gpu_count, shape, usd_per_gpu_hour
from common.pricing import ON_DEMAND_USD_PER_HOUR

DEFS = Path(__file__).resolve().parents[2] / "schemas" / "defs.schema.json"


def test_every_launchable_type_has_a_row_and_a_price() -> None:
    types = set(json.loads(DEFS.read_text())["$defs"]["instance_type"]["enum"])
    assert set(SHAPES) == types == set(ON_DEMAND_USD_PER_HOUR)


def test_the_multi_gpu_types_are_the_ones_torchrun_starts_several_processes_on() -> None:
    multi = {t: s.gpus for t, s in SHAPES.items() if s.gpus > 1}
    assert multi == {
        "g4dn.12xlarge": 4, "g4dn.metal": 8, "g5.12xlarge": 4, "g5.24xlarge": 4, "g5.48xlarge": 8,
    }  # fmt: skip
    assert gpu_count("g5.xlarge") == 1 and gpu_count("p5.48xlarge") == 1  # unknown: one process
    assert shape("g5.12xlarge").describe() == "4 x A10G (24 GiB each), 48 vCPUs"
    # the G-family quota counts vCPUs: a 4-GPU g4dn needs 48 of them, 12 per GPU
    assert shape("g4dn.12xlarge").vcpus == 48
    # every size doubles vCPUs and memory (4 GiB per vCPU) up the family
    assert all(s.memory_gib == 4 * s.vcpus for s in SHAPES.values())


def test_a_gpu_hour_costs_the_instance_price_over_its_gpus() -> None:
    assert usd_per_gpu_hour("g5.12xlarge") == round(ON_DEMAND_USD_PER_HOUR["g5.12xlarge"] / 4, 4)
    assert usd_per_gpu_hour("g5.xlarge") == ON_DEMAND_USD_PER_HOUR["g5.xlarge"]
    assert usd_per_gpu_hour("x1.large") is None


def test_a_batch_that_does_not_split_over_the_gpus_is_refused_with_what_to_use() -> None:
    assert batch_split_problem(32, 4) is None and batch_split_problem(31, 1) is None
    problem = batch_split_problem(30, 4)
    assert problem is not None and "\n" not in problem
    assert "model.batch_size 30 does not split over the 4 GPUs" in problem and "28 or 32" in problem
    assert "e.g. 8)" in (batch_split_problem(3, 8) or "")
