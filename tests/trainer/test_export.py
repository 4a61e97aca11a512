"""Portable models: merged folder, LoRA adapter with its base, model card, and the smoke test."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from trainer.base_model import resolve_base
from trainer.export import ExportError, export_models, model_card, smoke_test

H = 24
TARGETS = ["self_attention.q", "self_attention.v", "self_attention.k", "self_attention.o"]
LORA = {"r": 8, "lora_alpha": 16, "target_modules": [*TARGETS, "output_patch_embedding.output_layer"]}


def _window(n_items: int = 3, length: int = 200) -> SimpleNamespace:
    t = np.arange(length)
    past = [(50 + 10 * np.sin(2 * np.pi * t / 24 + i)).astype(np.float32) for i in range(n_items)]
    past[0][:5] = np.nan
    return SimpleNamespace(
        name="test-3",
        item_ids=tuple(f"item_{i}" for i in range(n_items)),
        past=past,
        starts=tuple("2024-02-01T00:00:00Z" for _ in range(n_items)),
        prediction_length=H,
        frequency="h",
    )


def _card() -> dict[str, Any]:
    scores = {
        "fine_tuned": {"wql": 0.0312, "mase": 0.81, "windows": []},
        "zero_shot": {"wql": 0.0587, "mase": 1.2, "windows": []},
        "seasonal_naive": {"wql": 0.0691, "mase": 1.04, "windows": []},
    }
    return {
        "title": "run r-1",
        "data": {"files": ["a.parquet", "b.parquet"], "items": 24, "rows": 24192, "frequency": "h",
                 "frequency_source": "inferred", "prediction_length": H, "backtest_windows": 3,
                 "drops": {"items_in": 25, "items_kept": 24, "dropped": {"too_short": {"count": 1}},
                           "gaps_filled": {"items": 2, "values": 7}}},  # fmt: skip
        "hyperparameters": {"learning_rate": 3e-4, "num_steps": 500, "finetune_mode": "lora"},
        "evaluation": {"models": scores, "season": 24, "exported": "fine_tuned", "beats_zero_shot": True,
                       "validation": {"zero_shot_wql": 0.06, "best_wql": 0.033, "best_step": 400},
                       "warnings": []},
    }  # fmt: skip


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A saved tiny base, a non-trivial LoRA adapter on it, and the merged model."""
    from chronos.chronos2 import Chronos2Pipeline
    from peft import LoraConfig, get_peft_model

    from trainer.model import load_base_model

    root = tmp_path_factory.mktemp("lora")
    base_model, _ = load_base_model("tiny", seed=0)
    Chronos2Pipeline(model=base_model).save_pretrained(root / "base")
    model, _ = load_base_model(str(root / "base"), seed=0)
    peft_model = get_peft_model(model, LoraConfig(**LORA))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)  # lora_B starts at zero: make the adapter change forecasts
    peft_model.save_pretrained(root / "adapter")
    merged = peft_model.merge_and_unload()
    merged.eval()
    Chronos2Pipeline(model=merged).save_pretrained(root / "merged")
    return SimpleNamespace(root=root, base=root / "base", adapter=root / "adapter", merged=root / "merged")


def _quantiles(pipeline: Any, window: SimpleNamespace) -> np.ndarray:
    inputs = [{"target": p} for p in window.past]
    quantiles, _ = pipeline.predict_quantiles(inputs, prediction_length=H, quantile_levels=[0.1, 0.5, 0.9])
    return np.stack([q.numpy() for q in quantiles])


def test_merged_folder_and_base_plus_adapter_forecast_the_same(
    lora_run: SimpleNamespace, tmp_path: Path
) -> None:
    from chronos.chronos2 import Chronos2Model, Chronos2Pipeline
    from peft import PeftModel

    ref = resolve_base(str(lora_run.base))
    out = export_models(source_dir=lora_run.merged, adapter_dir=lora_run.adapter, base=ref.to_dict(),
                        out_dir=tmp_path / "models", card=_card())  # fmt: skip
    assert sorted(p.name for p in (out / "adapter").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "base_model.json"
    ]  # fmt: skip
    assert json.loads((out / "adapter" / "base_model.json").read_text()) == {
        "id": ref.base,
        "revision": ref.revision,
    }
    window = _window()
    merged = _quantiles(Chronos2Pipeline.from_pretrained(str(out)), window)
    base = Chronos2Model.from_pretrained(str(lora_run.base))
    combined = PeftModel.from_pretrained(base, str(out / "adapter")).merge_and_unload()
    combined.eval()
    assert np.allclose(merged, _quantiles(Chronos2Pipeline(model=combined), window), atol=1e-5)
    plain = _quantiles(Chronos2Pipeline.from_pretrained(str(lora_run.base)), window)
    assert not np.allclose(merged, plain, atol=1e-3)  # the adapter matters, so the equality means something
    smoke_test(out, window, device="cpu")


def test_hub_base_adapter_points_at_the_pinned_commit(lora_run: SimpleNamespace, tmp_path: Path) -> None:
    sha = "ab" * 20
    location = f"/c/models--acme--tiny-chronos/snapshots/{sha}"
    base = {"base": "acme/tiny-chronos", "kind": "hub", "location": location, "revision": sha}
    out = export_models(source_dir=lora_run.merged, adapter_dir=lora_run.adapter, base=base,
                        out_dir=tmp_path / "models", card=_card())  # fmt: skip
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "acme/tiny-chronos" and config["revision"] == sha
    card = (out / "README.md").read_text()
    assert sha in card and f'revision="{sha}"' in card and "PeftModel.from_pretrained" in card


def test_full_finetune_export_has_no_adapter(lora_run: SimpleNamespace, tmp_path: Path) -> None:
    out = export_models(source_dir=lora_run.merged, adapter_dir=None, base=resolve_base("tiny").to_dict(),
                        out_dir=tmp_path / "models", card=_card())  # fmt: skip
    assert not (out / "adapter").exists() and (out / "model.safetensors").is_file()
    assert not (tmp_path / "models.partial").exists()


def test_missing_files_are_an_export_error(lora_run: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="model.safetensors missing"):
        export_models(source_dir=tmp_path, adapter_dir=None, base={}, out_dir=tmp_path / "m", card={})
    with pytest.raises(ExportError, match="adapter_model.safetensors missing"):
        export_models(
            source_dir=lora_run.merged, adapter_dir=tmp_path, base={}, out_dir=tmp_path / "m", card={}
        )


def test_smoke_test_fails_on_truncated_weights(lora_run: SimpleNamespace, tmp_path: Path) -> None:
    out = export_models(
        source_dir=lora_run.merged, adapter_dir=None, base={}, out_dir=tmp_path / "m", card={}
    )
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ExportError, match="from_pretrained") as err:
        smoke_test(out, _window(), device="cpu")
    assert "\n" not in str(err.value)


def test_smoke_test_fails_on_a_config_with_wrong_shapes(lora_run: SimpleNamespace, tmp_path: Path) -> None:
    out = export_models(
        source_dir=lora_run.merged, adapter_dir=None, base={}, out_dir=tmp_path / "m", card={}
    )
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "d_model": 48, "d_ff": 96}))
    with pytest.raises(ExportError, match="smoke test"):
        smoke_test(out, _window(), device="cpu")


def test_smoke_test_checks_shapes_and_values(
    lora_run: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chronos.chronos2 import Chronos2Pipeline

    real = Chronos2Pipeline.predict_df

    def short(self: Any, df: Any, **kwargs: Any) -> Any:
        return real(self, df, **kwargs).iloc[:-1]

    monkeypatch.setattr(Chronos2Pipeline, "predict_df", short)
    with pytest.raises(ExportError, match="2 items x 24 rows"):
        smoke_test(lora_run.merged, _window(), device="cpu")

    def nan(self: Any, df: Any, **kwargs: Any) -> Any:
        out = real(self, df, **kwargs)
        out.loc[3, "0.5"] = float("nan")
        return out

    monkeypatch.setattr(Chronos2Pipeline, "predict_df", nan)
    with pytest.raises(ExportError, match="1 forecast values are not finite"):
        smoke_test(lora_run.merged, _window(), device="cpu")


def test_model_card_has_data_metrics_base_and_versions() -> None:
    facts = {**_card(), "base": {"id": "acme/tiny-chronos", "kind": "hub", "revision": "c0ffee" * 6}}
    card = model_card(facts)
    for expected in ("# run r-1", "| fine-tuned | 0.0312 | 0.81 |", "| zero-shot (base) | 0.0587 | 1.2 |",
                     "| seasonal naive | 0.0691 | 1.04 |", "c0ffee" * 6, "items: 24", "files: 2",
                     "frequency: h (inferred)", "24 of 25 items kept (dropped: 1 too short)",
                     "7 missing values",
                     "backtest (test) windows: 3", "learning_rate: 0.0003", "transformers:",
                     "Chronos2Pipeline.from_pretrained", "best on validation", "of step 400"):  # fmt: skip
        assert expected in card, expected
    warning = "fine-tuned model does not beat the base model (zero-shot) on validation: WQL 0.07 vs 0.06"
    evaluation = {**facts["evaluation"], "exported": "base", "beats_zero_shot": False, "warnings": [warning]}
    worse = {**facts, "evaluation": evaluation}
    text = model_card(worse)
    assert "holds the base model (acme/tiny-chronos): fine-tuning did not beat it" in text
    assert "> fine-tuned model does not beat" in text
