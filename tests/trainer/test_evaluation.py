"""Fine-tuned vs zero-shot vs seasonal naive on the same test windows, the documents, the export choice."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from common import runspec
from common.layout import RunPaths
from common.runspec import DataSpec
from common.status import CompletionStatus, RunStatus
from trainer import evaluate, metrics
from trainer.context import RunData
from trainer.data import Dataset, load_dataset
from trainer.errors import ErrorLog, TerminalError
from trainer.evaluation import phase
from trainer.finalize import Outputs
from trainer.record import TrainingLog
from trainer.sync import Manifest
from trainer.synthetic import KNOWN_COVARIATE, PAST_COVARIATE, generate_dataset
from trainer.windows import EvalSet

H, K = 24, 2
PATHS = RunPaths(env="dev", run_id="20261201-000000")


def synthetic_dataset(root: Path, n_items: int = 10) -> Dataset:
    """Nine days of the hourly synthetic data, covariates on: K test windows of a day."""
    files = generate_dataset(root, n_items=n_items, length=24 * 9, items_per_file=5)
    spec = DataSpec.from_dict(
        {"frequency": "auto", "past_covariates": [PAST_COVARIATE], "known_covariates": [KNOWN_COVARIATE]}
    )
    return load_dataset(files, spec, prediction_length=H, backtest_windows=K)


def tiny_pipeline(seed: int) -> Any:
    from chronos.chronos2 import Chronos2Pipeline

    from trainer.model import load_base_model

    model, _ = load_base_model("tiny", seed=seed)
    model.eval()
    return Chronos2Pipeline(model=model)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return synthetic_dataset(tmp_path_factory.mktemp("eval-data"))


@pytest.fixture(scope="module")
def windows(dataset: Dataset) -> list[EvalSet]:
    return list(dataset.test_windows)


@pytest.fixture(scope="module")
def result(windows: list[EvalSet]) -> evaluate.Evaluation:
    pipelines = {evaluate.FINE_TUNED: tiny_pipeline(1), evaluate.ZERO_SHOT: tiny_pipeline(0)}
    validation = {
        "zero_shot_wql": 0.2, "zero_shot_loss": 1.5, "best_wql": 0.1, "best_step": 20,
        "history": [[0, 0.2, 1.5], [20, 0.1, 1.2]], "early_stopped": False, "stopped_at_step": None,
    }  # fmt: skip
    return evaluate.evaluate_models(pipelines, windows, validation=validation)


def training_doc(record: dict[str, Any]) -> dict[str, Any]:
    log = TrainingLog(run_id=PATHS.run_id, env=PATHS.env, errors=ErrorLog())
    log.evaluation = record
    return log.document(status=RunStatus.CLEANUP, completion=CompletionStatus.NORMAL, exit_code=0)


def test_three_models_reported_on_the_same_windows(
    result: evaluate.Evaluation, windows: list[EvalSet]
) -> None:
    record = result.record
    assert [w["name"] for w in record["windows"]] == ["test-1", "test-2"]
    start = windows[1].starts[0]
    assert record["windows"][1] == {"name": "test-2", "items": 10, "first_start": start, "last_start": start}
    assert record["season"] == 24 and record["season_source"] == "gluonts"
    for name in evaluate.MODELS:
        scores = record["models"][name]
        assert [w["name"] for w in scores["windows"]] == ["test-1", "test-2"]
        assert all(isinstance(v, float) for v in (scores["wql"], scores["mase"]))
    # a random-init model with another seed forecasts differently
    assert record["models"]["fine_tuned"]["wql"] != record["models"]["zero_shot"]["wql"]
    # seasonal naive over both windows, by hand: sum |y - naive| / sum |y|
    naive = [np.stack([metrics.seasonal_naive(p, H, 24)[0] for p in w.past]) for w in windows]
    errors = sum(np.abs(w.future - n).sum() for w, n in zip(windows, naive, strict=True))
    expected = errors / sum(np.abs(w.future).sum() for w in windows)
    assert record["models"]["seasonal_naive"]["wql"] == pytest.approx(expected)
    assert len(record["items"]) == 10 and record["items_truncated"] is False
    assert set(record["items"][0]) == {"item_id", *evaluate.MODELS}


def test_evaluation_object_is_schema_valid_in_training_json(result: evaluate.Evaluation) -> None:
    doc = training_doc(result.record)
    assert doc["evaluation"]["beats_zero_shot"] is True and doc["evaluation"]["exported"] == "fine_tuned"
    assert doc["evaluation"]["validation"]["history"] == [[0, 0.2, 1.5], [20, 0.1, 1.2]]
    plain = TrainingLog(run_id=PATHS.run_id, env=PATHS.env, errors=ErrorLog())
    assert "evaluation" not in plain.document(
        status=RunStatus.CLEANUP, completion=CompletionStatus.NORMAL, exit_code=0
    )


def test_flat_metrics_name_every_model(result: evaluate.Evaluation) -> None:
    flat = result.metrics
    assert flat["model_wql"] == result.record["models"]["fine_tuned"]["wql"]
    assert flat["zero_shot_mase"] == result.record["models"]["zero_shot"]["mase"]
    assert flat["baseline_wql"] == result.record["models"]["seasonal_naive"]["wql"]
    assert (flat["val_wql"], flat["zero_shot_val_wql"]) == (0.1, 0.2)
    assert (flat["season"], flat["eval_items"], flat["backtest_windows"]) == (24.0, 10.0, 2.0)


def test_metrics_document_has_every_model_window_and_item(result: evaluate.Evaluation) -> None:
    doc = result.scores
    assert doc["models"] == list(evaluate.MODELS) and len(doc["items"]) == 10
    item = doc["items"][3]
    assert set(item["windows"]) == {"test-1", "test-2"}
    assert set(item["windows"]["test-2"]) == set(evaluate.MODELS)
    assert doc["overall"]["seasonal_naive"]["skipped"] == {"no_forecast": 0, "no_mase": 0}
    assert doc["overall"]["fine_tuned"]["wql"] == result.record["models"]["fine_tuned"]["wql"]
    json.dumps(doc, allow_nan=False)  # plain JSON: no NaN


def test_forecasts_document_shape(result: evaluate.Evaluation, windows: list[EvalSet]) -> None:
    doc = result.forecasts
    assert doc["window"] == "test-2" and doc["quantile_levels"] == [0.1, 0.5, 0.9]
    assert len(doc["items"]) == 8  # 10 items: at most 8 charted
    item = doc["items"][0]
    assert set(item) == {
        "item_id", "context_timestamps", "context_values", "horizon_timestamps", "actual", "median", "q10",
        "q90", "zero_shot_median", "zero_shot_q10", "zero_shot_q90", "seasonal_naive",
    }  # fmt: skip
    assert len(item["context_values"]) == len(item["context_timestamps"]) == 3 * H
    assert len(item["horizon_timestamps"]) == len(item["median"]) == len(item["zero_shot_q90"]) == H
    start = pd.Timestamp(windows[1].starts[0])
    assert item["horizon_timestamps"][0] == windows[1].starts[0]
    assert item["context_timestamps"][-1] == (start - pd.Timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert item["actual"] == pytest.approx(windows[1].future[0].tolist())
    assert item["median"] != item["zero_shot_median"]


@pytest.mark.parametrize(
    ("validation", "keep", "beats", "exported"),
    [({"best_wql": 0.1, "zero_shot_wql": 0.2}, True, True, "fine_tuned"),
     ({"best_wql": 0.3, "zero_shot_wql": 0.2}, False, False, "fine_tuned"),
     ({"best_wql": 0.2, "zero_shot_wql": 0.2}, True, False, "base"),
     (None, True, None, "fine_tuned")],
)  # fmt: skip
def test_decision_from_the_validation_block(validation: Any, keep: bool, beats: Any, exported: str) -> None:
    decision = evaluate.decide(validation, keep_base_if_worse=keep)
    assert (decision.beats_zero_shot, decision.exported) == (beats, exported)
    if beats is False:
        assert decision.warnings[0] == (
            "fine-tuned model does not beat the base model (zero-shot) on validation: WQL "
            f"{validation['best_wql']} vs 0.2"
        )
    else:
        assert decision.warnings == ()


def test_no_validation_block_is_recorded_as_not_measured(windows: list[EvalSet]) -> None:
    naive_only = {evaluate.FINE_TUNED: tiny_pipeline(0), evaluate.ZERO_SHOT: tiny_pipeline(0)}
    result = evaluate.evaluate_models(naive_only, windows[-1:], mase_season=12)
    assert result.record["validation"] == {
        "zero_shot_wql": None, "best_wql": None, "best_step": None, "stopped_at_step": None,
        "history": [], "early_stopped": False,
    }  # fmt: skip
    assert result.record["season"] == 12 and result.record["season_source"] == "spec"
    assert result.record["beats_zero_shot"] is None and result.metrics["val_wql"] is None
    assert result.record["models"]["fine_tuned"] == result.record["models"]["zero_shot"]  # same model
    training_doc(result.record)  # schema-valid


def test_compat_evaluate_scores_one_model_and_the_baseline(windows: list[EvalSet]) -> None:
    scores = metrics.evaluate(tiny_pipeline(0), windows[0], [0.1, 0.5, 0.9])
    assert scores["season"] == 24 and scores["n_items"] == 10
    naive = np.stack([metrics.seasonal_naive(p, H, 24)[0] for p in windows[0].past])
    expected = np.abs(windows[0].future - naive).sum() / np.abs(windows[0].future).sum()
    assert scores["seasonal_naive_wql"] == pytest.approx(expected)
    assert scores["model_wql"] > 0 and scores["model_mase"] > 0


# --- the phase -------------------------------------------------------------------------


class FakeExport(types.ModuleType):
    """``trainer.export`` stand-in: copies the source folder and records the calls."""

    class ExportError(Exception):
        pass

    def __init__(self, fail: bool = False) -> None:
        super().__init__("trainer.export")
        self.calls: list[dict[str, Any]] = []
        self.fail = fail

    def export_models(self, **kwargs: Any) -> Path:
        self.calls.append(kwargs)
        out = kwargs["out_dir"]
        out.mkdir(parents=True, exist_ok=True)
        for f in Path(kwargs["source_dir"]).iterdir():
            (out / f.name).write_bytes(f.read_bytes())
        (out / "README.md").write_text(json.dumps(kwargs["card"], default=str))
        return out

    def smoke_test(self, model_dir: Path, window: Any, *, device: str) -> None:
        self.calls.append({"smoke": model_dir, "window": window.name, "device": device})
        if self.fail:
            raise self.ExportError("the exported model forecast NaN")


@pytest.fixture
def fake_export(monkeypatch: pytest.MonkeyPatch) -> FakeExport:
    import trainer

    fake = FakeExport()
    monkeypatch.setitem(sys.modules, "trainer.export", fake)
    monkeypatch.setattr(trainer, "export", fake, raising=False)
    return fake


def run_ctx(tmp_path: Path, dataset: Dataset, validation: dict[str, Any] | None, keep: bool) -> Any:
    spec = runspec.from_dict(
        {"env": "dev", "instance": {"types": ["g5.xlarge"], "market": "spot", "max_runtime": 60},
         "data": {"prefix": "cached-datasets/demo/"},
         "model": {"base": "tiny", "prediction_length": H, "num_steps": 10, "seed": 3, "backtest_windows": K,
                   "keep_base_if_worse": keep}},
    )  # fmt: skip
    tuned = tmp_path / "final-model"
    tiny_pipeline(5).model.save_pretrained(str(tuned))
    data = RunData(dataset=dataset, base_model="tiny")
    data.manifest = Manifest(prefix="cached-datasets/demo/", files=())
    data.base_ref = {"base": "tiny", "kind": "tiny", "location": "tiny-32", "revision": None}
    data.base_info = {"param_count": 1000, "kind": "tiny", "revision": None}
    data.validation_result = validation
    return types.SimpleNamespace(
        opts=types.SimpleNamespace(work=tmp_path / "work", device="cpu"),
        require_spec=lambda: spec,
        data=data,
        outputs=Outputs(model_dir=tuned),
        record=TrainingLog(run_id=PATHS.run_id, env=PATHS.env, errors=ErrorLog()),
        paths=PATHS,
        deps=types.SimpleNamespace(clock=lambda: pd.Timestamp("2026-12-01T00:00:00Z").to_pydatetime()),
    )


def test_phase_exports_the_base_when_fine_tuning_is_worse_and_kept(
    tmp_path: Path, dataset: Dataset, windows: list[EvalSet], fake_export: FakeExport
) -> None:
    worse = {
        "zero_shot_wql": 0.2, "best_wql": 0.25, "best_step": 0,
        "history": [[0, 0.2, 1.0], [10, 0.25, 1.1]], "early_stopped": False, "stopped_at_step": None,
    }  # fmt: skip
    ctx = run_ctx(tmp_path, dataset, worse, keep=True)
    details: dict[str, Any] = {}
    phase(ctx, details)
    export_call, smoke = fake_export.calls
    assert export_call["source_dir"] == tmp_path / "work" / "zero-shot-model"  # the tiny base, saved
    assert export_call["adapter_dir"] is None and export_call["base"]["kind"] == "tiny"
    card = export_call["card"]
    assert card["evaluation"]["exported"] == "base"
    assert set(card["evaluation"]["models"]) == set(evaluate.MODELS)
    assert card["data"] == dataset.summary() and card["hyperparameters"]["keep_base_if_worse"] is True
    assert smoke == {"smoke": tmp_path / "work" / "export", "window": "test-2", "device": "cpu"}
    assert ctx.outputs.model_dir == tmp_path / "work" / "export"
    record = ctx.record.evaluation
    assert record["exported"] == "base" and record["beats_zero_shot"] is False
    assert record["warnings"][0].startswith(
        "fine-tuned model does not beat the base model (zero-shot) on validation"
    )
    assert ctx.outputs.model_metadata["exported"] == "base"
    assert ctx.outputs.model_metadata["base_model"] == {
        "id": "tiny",
        "revision": None,
        "parameters": 1000,
        "kind": "tiny",
    }
    assert ctx.outputs.model_metadata["windows"] == {
        "prediction_length": H,
        "backtest_windows": K,
        "validation": True,
    }
    assert details["exported"] == "base" and ctx.record.metrics["zero_shot_val_wql"] == 0.2
    # the zero-shot of a random-init base is the child's step-0 model: the run's seed
    from trainer.evaluation import zero_shot_pipeline

    step0 = evaluate.predict_window(zero_shot_pipeline(ctx), windows[-1], (0.5,))
    again = evaluate.predict_window(tiny_pipeline(3), windows[-1], (0.5,))
    np.testing.assert_allclose(step0, again)
    assert json.loads((tmp_path / "work" / "evaluation" / "metrics.json").read_text())["models"] == list(
        evaluate.MODELS
    )
    assert json.loads(ctx.outputs.forecasts.read_text())["window"] == "test-2"
    training_doc(record)


def test_phase_exports_the_fine_tuned_model_with_its_adapter_otherwise(
    tmp_path: Path, dataset: Dataset, windows: list[EvalSet], fake_export: FakeExport
) -> None:
    worse = {"zero_shot_wql": 0.2, "best_wql": 0.25, "best_step": 0, "history": [], "early_stopped": False}
    ctx = run_ctx(tmp_path, dataset, worse, keep=False)
    ctx.data.adapter_dir = tmp_path / "adapter"
    phase(ctx, {})
    assert fake_export.calls[0]["source_dir"] == tmp_path / "final-model"
    assert fake_export.calls[0]["adapter_dir"] == tmp_path / "adapter"
    assert ctx.record.evaluation["exported"] == "fine_tuned" and len(ctx.record.evaluation["warnings"]) == 1


def test_a_broken_export_is_a_terminal_error(
    tmp_path: Path, dataset: Dataset, windows: list[EvalSet], fake_export: FakeExport
) -> None:
    fake_export.fail = True
    ctx = run_ctx(tmp_path, dataset, None, keep=False)
    with pytest.raises(TerminalError, match="model export failed: the exported model forecast NaN") as caught:
        phase(ctx, {})
    assert caught.value.component == "evaluation"


def test_missing_values_are_tolerated_and_counted(windows: list[EvalSet]) -> None:
    last = windows[-1]
    past = [p.copy() for p in last.past]
    past[0][:] = np.nan  # no finite past: seasonal naive cannot forecast item 0
    past[1][-30:-20] = np.nan  # gaps in the last season: filled
    future = last.future.copy()
    future[2, :5] = np.nan  # masked like GluonTS
    holed = dataclasses.replace(last, past=past, future=future)
    pipeline = tiny_pipeline(0)
    result = evaluate.evaluate_models({evaluate.FINE_TUNED: pipeline, evaluate.ZERO_SHOT: pipeline}, [holed])
    skipped = result.scores["overall"]
    assert skipped["seasonal_naive"]["skipped"] == {"no_forecast": 1, "no_mase": 1}
    assert skipped["fine_tuned"]["skipped"] == {"no_forecast": 0, "no_mase": 1}  # no seasonal error
    naive = result.record["items"][0]["seasonal_naive"]
    assert naive == {"wql": None, "mase": None}
    assert result.record["models"]["seasonal_naive"]["wql"] is not None
    assert any("seasonal naive: 1 items" in w for w in result.record["warnings"])
    assert result.forecasts["items"][1]["seasonal_naive"][0] is not None
    training_doc(result.record)


def test_phase_with_the_shipped_pretrained_base_exports_its_folder_when_forced_worse(
    tmp_path: Path, dataset: Dataset, fake_export: FakeExport
) -> None:
    base_model = pytest.importorskip("trainer.base_model")
    if not (base_model.BUNDLED_TINY_DIR / "config.json").is_file():
        pytest.skip("the tiny pretrained model is not shipped in this checkout")
    ref = base_model.resolve_base("tiny-pretrained")
    forced = {"zero_shot_wql": 0.1, "best_wql": 0.5, "best_step": 10, "history": [], "early_stopped": False}
    ctx = run_ctx(tmp_path, dataset, forced, keep=True)
    ctx.data.base_ref, ctx.data.base_model = ref.to_dict(), ref.location
    phase(ctx, {})
    models = ctx.record.evaluation["models"]
    assert models["zero_shot"]["wql"] != models["fine_tuned"]["wql"]  # both reported, different models
    assert fake_export.calls[0]["source_dir"] == Path(ref.location)  # the shipped folder itself
    assert ctx.outputs.model_metadata["base_model"]["revision"] == ref.revision
    assert ctx.outputs.model_metadata["base_model"]["kind"] == "bundled"
