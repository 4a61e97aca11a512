"""Precision and batch plans with a faked GPU: the decision table, the OOM and NaN fallbacks.

No GPU here: the device capability is passed in, the OOM is an injected exception, and a
tiny CPU Trainer whose loss turns NaN shows the guard stops a real training loop.
"""

from __future__ import annotations

import json
import math
import sys
from types import SimpleNamespace

import pytest
import torch

from trainer.precision import (
    PLAN_FILE,
    NanGuard,
    NonFiniteLoss,
    PlanSaver,
    PrecisionPlan,
    PrecisionRecord,
    after_nan,
    after_oom,
    capability,
    is_cuda_oom,
    load_plan,
    plan_precision,
    resume_plan,
    save_plan,
    strip_scaler_state,
)

T4, V100, A10G, A100, P100 = (7, 5), (7, 0), (8, 6), (8, 0), (6, 0)


@pytest.mark.parametrize(
    ("setting", "device", "cap", "mode", "tf32", "reason"),
    [
        ("auto", "cpu", None, "fp32", False, "cpu: fp32"),
        ("fp32", "cpu", None, "fp32", False, "cpu: fp32"),
        ("fp16", "cpu", None, "fp32", False, "cpu: fp16 needs a GPU, fp32 on CPU"),
        ("bf16", "cpu", None, "fp32", False, "cpu: bf16 needs a GPU, fp32 on CPU"),
        ("auto", "cuda", A10G, "bf16", True, "auto: sm86 supports bf16"),
        ("auto", "cuda", A100, "bf16", True, "auto: sm80 supports bf16"),
        ("auto", "cuda", T4, "fp16", False, "auto: sm75 has no bf16, fp16 with a gradient scaler"),
        ("auto", "cuda", V100, "fp16", False, "auto: sm70 has no bf16, fp16 with a gradient scaler"),
        ("auto", "cuda", P100, "fp32", False, "auto: sm60 has no fast fp16 or bf16, fp32"),
        ("auto", "cuda", None, "fp32", False, "auto: GPU capability unknown, fp32"),
        ("bf16", "cuda", A10G, "bf16", True, "bf16 requested (sm86)"),
        ("fp16", "cuda", A10G, "fp16", True, "fp16 requested (sm86)"),
        ("fp16", "cuda", T4, "fp16", False, "fp16 requested (sm75)"),
        ("fp16", "cuda", P100, "fp16", False, "fp16 requested (sm60)"),
        ("fp16", "cuda", None, "fp16", False, "fp16 requested"),
        ("fp32", "cuda", A10G, "fp32", False, "fp32 requested (sm86)"),
        ("fp32", "cuda", T4, "fp32", False, "fp32 requested (sm75)"),
        ("fp32", "cuda", None, "fp32", False, "fp32 requested"),
    ],
)
def test_the_decision_table(setting, device, cap, mode, tf32, reason):
    plan = plan_precision(setting, device=device, capability=cap, batch_size=32)
    assert (plan.mode, plan.tf32, plan.reason) == (mode, tf32, reason)
    assert (plan.micro_batch, plan.grad_accum) == (32, 1)
    args = plan.training_args()
    assert (args["fp16"], args["bf16"], args["tf32"]) == (mode == "fp16", mode == "bf16", tf32)
    assert args["per_device_train_batch_size"] == 32 and args["gradient_accumulation_steps"] == 1
    assert args["logging_nan_inf_filter"] is False  # else the Trainer hides a NaN loss from the guard


@pytest.mark.parametrize(("cap", "sm"), [(T4, "sm75"), (V100, "sm70"), (P100, "sm60")])
def test_bf16_on_an_older_gpu_is_refused_with_what_to_do(cap, sm):
    with pytest.raises(ValueError) as err:
        plan_precision("bf16", device="cuda", capability=cap, batch_size=32)
    assert (
        str(err.value)
        == f"bf16 needs an sm80+ GPU (A10G, A100); this GPU is {sm}: use precision = 'fp16' or 'auto'"
    )


def test_bf16_on_a_gpu_of_unknown_capability_is_refused():
    with pytest.raises(ValueError, match="bf16 needs an sm80"):
        plan_precision("bf16", device="cuda", capability=None, batch_size=32)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"setting": "half", "device": "cuda", "capability": T4, "batch_size": 8},
            "precision must be one of",
        ),
        ({"setting": "auto", "device": "tpu", "capability": None, "batch_size": 8}, "device must be one of"),
        (
            {"setting": "auto", "device": "cpu", "capability": None, "batch_size": 0},
            "batch_size must be >= 1",
        ),
    ],
)
def test_bad_inputs_are_refused(kwargs, match):
    setting = kwargs.pop("setting")
    with pytest.raises(ValueError, match=match):
        plan_precision(setting, **kwargs)


def _oom_chain(batch_size: int) -> list[tuple[int, int]]:
    plan = plan_precision("auto", device="cuda", capability=T4, batch_size=batch_size)
    chain = []
    while plan is not None:
        chain.append((plan.micro_batch, plan.grad_accum))
        assert plan.micro_batch * plan.grad_accum == batch_size
        assert plan.mode == "fp16"  # an OOM changes the batch split only
        plan = after_oom(plan)
    return chain


@pytest.mark.parametrize(
    ("batch", "chain"),
    [
        (32, [(32, 1), (16, 2), (8, 4), (4, 8), (2, 16), (1, 32)]),
        (12, [(12, 1), (6, 2), (3, 4), (2, 6), (1, 12)]),
        (7, [(7, 1), (1, 7)]),
        (18, [(18, 1), (9, 2), (6, 3), (3, 6), (2, 9), (1, 18)]),
        (1, [(1, 1)]),
    ],
)
def test_each_oom_halves_the_micro_batch_and_keeps_the_effective_batch(batch, chain):
    assert _oom_chain(batch) == chain


def test_after_oom_keeps_mode_and_the_args_follow():
    nxt = after_oom(plan_precision("auto", device="cuda", capability=A10G, batch_size=32))
    assert nxt is not None
    assert nxt.training_args()["per_device_train_batch_size"] == 16
    assert nxt.training_args()["gradient_accumulation_steps"] == 2
    assert (nxt.mode, nxt.tf32) == ("bf16", True)


def test_a_nan_falls_back_to_fp32_with_the_same_batches_and_fp32_has_no_fallback():
    fp16 = after_oom(plan_precision("auto", device="cuda", capability=T4, batch_size=32))
    assert fp16 is not None
    fp32 = after_nan(fp16)
    assert fp32 is not None
    assert (fp32.mode, fp32.micro_batch, fp32.grad_accum) == ("fp32", 16, 2)
    assert fp32.reason == "fp16 gave a non-finite loss, fp32"
    assert not fp32.training_args()["fp16"]
    bf16 = after_nan(plan_precision("auto", device="cuda", capability=A10G, batch_size=8))
    assert bf16 is not None and bf16.mode == "fp32"
    assert after_nan(fp32) is None


def _state(step: int) -> SimpleNamespace:
    return SimpleNamespace(global_step=step)


def test_the_guard_raises_on_a_non_finite_loss_under_fp16():
    guard = NanGuard(plan_precision("fp16", device="cuda", capability=T4, batch_size=8))
    control = object()
    assert guard.on_log(None, _state(10), control, logs={"loss": 0.5, "grad_norm": 1.2}) is control
    with pytest.raises(NonFiniteLoss) as err:
        guard.on_log(None, _state(20), control, logs={"loss": float("nan"), "grad_norm": 1.0})
    assert (err.value.step, err.value.mode, err.value.what, err.value.fallback) == (20, "fp16", "loss", True)
    assert math.isnan(err.value.loss)
    assert "step 20 under fp16" in str(err.value) and "fp32" in str(err.value)


def test_the_guard_lets_the_fp16_scaler_skip_a_few_overflowing_steps():
    guard = NanGuard(plan_precision("fp16", device="cuda", capability=T4, batch_size=8), grad_norm_patience=3)
    inf = float("inf")
    guard.on_log(None, _state(1), None, logs={"loss": 0.9, "grad_norm": inf})
    guard.on_log(None, _state(2), None, logs={"loss": 0.9, "grad_norm": inf})
    guard.on_log(None, _state(3), None, logs={"loss": 0.8, "grad_norm": 2.0})  # the scaler recovered
    guard.on_log(None, _state(4), None, logs={"loss": 0.8, "grad_norm": inf})
    guard.on_log(None, _state(5), None, logs={"loss": 0.8, "grad_norm": inf})
    with pytest.raises(NonFiniteLoss) as err:
        guard.on_log(None, _state(6), None, logs={"loss": 0.8, "grad_norm": inf})
    assert (err.value.step, err.value.what) == (6, "grad_norm")
    assert "gradient norm is inf at step 6" in str(err.value)


def test_under_bf16_a_non_finite_grad_norm_stops_at_once():
    guard = NanGuard(plan_precision("auto", device="cuda", capability=A10G, batch_size=8))
    with pytest.raises(NonFiniteLoss, match="gradient norm is nan at step 3 under bf16"):
        guard.on_log(None, _state(3), None, logs={"loss": 0.8, "grad_norm": float("nan")})


def test_under_fp32_a_nan_is_a_real_failure_without_fallback():
    plan = plan_precision("fp32", device="cuda", capability=A10G, batch_size=8)
    with pytest.raises(NonFiniteLoss) as err:
        NanGuard(plan).on_log(None, _state(7), None, logs={"loss": float("inf")})
    assert err.value.fallback is False and after_nan(plan) is None
    assert "no precision left to fall back to" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_guard_ignores_logs_without_a_loss():
    guard = NanGuard(plan_precision("fp16", device="cuda", capability=T4, batch_size=8))
    assert guard.on_log(None, _state(1), "c", logs={"learning_rate": 1e-3}) == "c"
    assert guard.on_log(None, _state(1), "c", logs=None) == "c"


class _NanAt(torch.nn.Module):
    """A one-weight regression whose loss turns NaN from optimizer step ``nan_from``."""

    def __init__(self, nan_from: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.nan_from = nan_from
        self.calls = 0

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        loss = ((self.w * x - y) ** 2).mean()
        return {"loss": loss * float("nan") if self.calls >= self.nan_from else loss}


def test_a_real_trainer_stops_with_nonfiniteloss_and_its_args_are_accepted(tmp_path):
    from transformers import Trainer, TrainingArguments

    plan = plan_precision("auto", device="cpu", capability=None, batch_size=2)
    args = TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, max_steps=6, logging_steps=1, report_to="none",
        save_strategy="no", disable_tqdm=True, learning_rate=1e-2, **plan.training_args(),
    )  # fmt: skip
    assert (args.fp16, args.bf16, args.per_device_train_batch_size, args.gradient_accumulation_steps) == (
        False, False, 2, 1,
    )  # fmt: skip
    assert args.mixed_precision == "no" and args.logging_nan_inf_filter is False
    data = [{"x": torch.tensor([float(i)]), "y": torch.tensor([2.0 * i])} for i in range(8)]
    guard = NanGuard(plan)
    trainer = Trainer(model=_NanAt(nan_from=4), args=args, train_dataset=data, callbacks=[guard])
    with pytest.raises(NonFiniteLoss) as err:
        trainer.train()
    # the loss itself, not only the gradient norm: the Trainer's NaN filter is off
    assert (err.value.step, err.value.what, err.value.fallback) == (4, "loss", False)


def test_after_oom_args_with_accumulation_are_accepted(tmp_path):
    from transformers import TrainingArguments

    plan = after_oom(after_oom(plan_precision("fp32", device="cpu", capability=None, batch_size=12)))
    assert plan is not None
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", **plan.training_args())
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 12
    assert args.gradient_accumulation_steps == 4


class _FakeOOM(RuntimeError):
    pass


@pytest.mark.parametrize(
    ("exc", "oom"),
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 14.75 GiB total)"), True),
        (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True),
        (_FakeOOM("CUDA error: out of memory"), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)"), False),
        (ValueError("CUDA out of memory"), False),  # not a runtime error: not torch's
        (MemoryError("host memory"), False),
        (KeyboardInterrupt(), False),
    ],
)
def test_is_cuda_oom(exc, oom):
    assert is_cuda_oom(exc) is oom


def test_is_cuda_oom_sees_through_a_wrapping_error():
    try:
        try:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        except RuntimeError as inner:
            raise ValueError("training step failed") from inner
    except ValueError as outer:
        assert is_cuda_oom(outer)


@pytest.mark.row("records-gpu-preflight-injected")
@pytest.mark.parametrize("available, expected", [(False, None), (True, (8, 6))])
def test_capability_reads_torch_cuda_the_same_on_any_machine(monkeypatch, available, expected):
    """A fake torch, so the answer does not depend on whether this machine has a GPU."""
    cuda = SimpleNamespace(is_available=lambda: available, get_device_capability=lambda: (8, 6))
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    assert capability() == expected


def test_the_plan_file_round_trips(tmp_path):
    plan = after_oom(plan_precision("auto", device="cuda", capability=A10G, batch_size=24))
    assert plan is not None
    path = save_plan(plan, tmp_path / "out")
    assert path == tmp_path / "out" / PLAN_FILE and PLAN_FILE == "precision.json"
    assert json.loads(path.read_text())["micro_batch"] == 12
    assert load_plan(tmp_path / "out") == plan
    assert PrecisionPlan.from_dict(plan.to_dict()) == plan
    assert load_plan(tmp_path / "nothing-here") is None


def test_a_broken_plan_file_names_itself(tmp_path):
    (tmp_path / PLAN_FILE).write_text('{"mode": "fp16"}')
    with pytest.raises(ValueError, match="precision.json is not a precision plan"):
        load_plan(tmp_path)
    (tmp_path / PLAN_FILE).write_text('{"mode": "fp8", "reason": "", "micro_batch": 1, "grad_accum": 1}')
    with pytest.raises(ValueError, match="precision mode must be one of"):
        load_plan(tmp_path)


def test_the_plan_is_written_into_every_checkpoint(tmp_path):
    plan = plan_precision("auto", device="cuda", capability=T4, batch_size=8)
    (tmp_path / "checkpoint-40").mkdir()
    PlanSaver(plan).on_save(SimpleNamespace(output_dir=str(tmp_path)), _state(40), None)
    assert load_plan(tmp_path / "checkpoint-40") == plan


def test_a_resume_keeps_an_fp32_fallback_and_a_smaller_micro_batch():
    planned = plan_precision("auto", device="cuda", capability=T4, batch_size=32)
    saved = after_nan(after_oom(after_oom(planned)))
    assert saved is not None
    plan = resume_plan(planned, saved)
    assert (plan.mode, plan.micro_batch, plan.grad_accum) == ("fp32", 8, 4)
    assert resume_plan(planned, None) == planned


def test_a_resume_on_another_gpu_takes_this_gpus_mode():
    saved = after_oom(plan_precision("auto", device="cuda", capability=A10G, batch_size=32))
    planned = plan_precision("auto", device="cuda", capability=T4, batch_size=32)
    plan = resume_plan(planned, saved)
    assert (plan.mode, plan.micro_batch, plan.grad_accum, plan.tf32) == ("fp16", 16, 2, False)
    other_batch = plan_precision("auto", device="cuda", capability=T4, batch_size=64)
    assert resume_plan(other_batch, saved).micro_batch == 64


def test_resuming_an_fp16_checkpoint_in_fp32_drops_the_scaler_state(tmp_path):
    (tmp_path / "scaler.pt").write_bytes(b"state")
    fp16 = plan_precision("fp16", device="cuda", capability=T4, batch_size=8)
    assert strip_scaler_state(tmp_path, fp16) is False and (tmp_path / "scaler.pt").exists()
    fp32 = after_nan(fp16)
    assert fp32 is not None
    assert strip_scaler_state(tmp_path, fp32) is True and not (tmp_path / "scaler.pt").exists()
    assert strip_scaler_state(tmp_path, fp32) is False


def test_the_record_lists_each_change():
    start = plan_precision("auto", device="cuda", capability=T4, batch_size=32)
    smaller = after_oom(start)
    assert smaller is not None
    fp32 = after_nan(smaller)
    assert fp32 is not None
    record = PrecisionRecord.start(start).changed(smaller, at_step=0, why="CUDA out of memory")
    record = record.changed(fp32, at_step=120, why="the training loss is nan at step 130 under fp16")
    doc = record.to_dict()
    assert doc["initial"]["mode"] == "fp16" and doc["final"] == fp32.to_dict()
    assert [(c["at_step"], c["from"]["micro_batch"], c["to"]["micro_batch"]) for c in doc["changes"]] == [
        (0, 32, 16), (120, 16, 16),
    ]  # fmt: skip
    assert doc["changes"][1]["to"]["mode"] == "fp32"
    assert json.loads(json.dumps(doc)) == doc
    assert PrecisionRecord.from_dict(doc) == record
    assert PrecisionRecord.start(start).to_dict()["changes"] == []
