"""Building the base model: tiny random init, a local folder, or a Hub id (offline here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer.base_model import BUNDLED_TINY_DIR, resolve_base, weights_sha256
from trainer.model import ModelLoadError, base_pipeline, load_base_model, parse_tiny, tiny_config

SHA = "0123456789abcdef0123456789abcdef01234567"


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_model_size_and_config() -> None:
    model, info = load_base_model("tiny", seed=0)
    assert info.param_count == 54144 and info.kind == "tiny" and info.d_model == 32
    assert model.training
    _, bigger = load_base_model("tiny-64", seed=0)
    assert bigger.d_model == 64 and bigger.param_count > 3 * info.param_count
    assert tiny_config(d_model=64).chronos_config["output_patch_size"] == 16
    assert parse_tiny("tiny") == 32 and parse_tiny("tiny-64") == 64 and parse_tiny("tinyx") is None


def test_tiny_weights_depend_only_on_the_seed() -> None:
    a, _ = load_base_model("tiny", seed=5)
    b, _ = load_base_model("tiny", seed=5)
    c, _ = load_base_model("tiny", seed=6)
    assert _same_weights(a, b)
    assert not _same_weights(a, c)


def test_local_directory_loads_the_saved_model(tmp_path: Path) -> None:
    from chronos.chronos2 import Chronos2Pipeline

    model, _ = load_base_model("tiny", seed=1)
    Chronos2Pipeline(model=model).save_pretrained(tmp_path / "saved")
    loaded, info = load_base_model(str(tmp_path / "saved"), seed=0)
    assert info.kind == "local" and info.resolved == str((tmp_path / "saved").resolve())
    assert info.param_count == 54144 and info.revision == weights_sha256(tmp_path / "saved")
    assert info.dtype == "float32" and info.to_dict()["revision"] == info.revision
    assert _same_weights(model, loaded)


def test_missing_local_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="config.json"):
        load_base_model(str(tmp_path), seed=0)


def test_hub_id_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="amazon/chronos-2"):
        load_base_model("amazon/chronos-2", seed=0)


def test_bad_tiny_size() -> None:
    with pytest.raises(ModelLoadError, match="multiple of 4"):
        tiny_config(d_model=30)


def test_explicit_dtype_is_loaded_and_recorded(tmp_path: Path) -> None:
    from chronos.chronos2 import Chronos2Pipeline

    model, _ = load_base_model("tiny", seed=1)
    Chronos2Pipeline(model=model).save_pretrained(tmp_path / "saved")
    loaded, info = load_base_model(str(tmp_path / "saved"), dtype=torch.bfloat16)
    assert info.dtype == "bfloat16"
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    tiny, tiny_info = load_base_model("tiny", dtype=torch.float64)
    assert tiny_info.dtype == "float64" and next(tiny.parameters()).dtype == torch.float64


def test_hub_snapshot_loads_with_its_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chronos.chronos2 import Chronos2Pipeline

    repo = tmp_path / "hub" / "models--acme--tiny-chronos"
    model, _ = load_base_model("tiny", seed=2)
    Chronos2Pipeline(model=model).save_pretrained(repo / "snapshots" / SHA)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = resolve_base("acme/tiny-chronos")
    loaded, info = load_base_model(ref.to_dict(), seed=0)  # the child gets the resolved record
    assert info.kind == "hub" and info.revision == SHA and info.model_id == "acme/tiny-chronos"
    assert info.resolved == ref.location and info.base_ref() == ref
    assert _same_weights(model, loaded)


def test_bundled_tiny_pretrained_loads_and_forecasts() -> None:
    model, info = load_base_model("tiny-pretrained", seed=0)
    assert (
        info.kind == "bundled" and info.resolved == str(BUNDLED_TINY_DIR) and len(info.revision or "") == 64
    )
    assert info.param_count == 54144
    pipeline = base_pipeline(resolve_base("tiny-pretrained"))
    assert not pipeline.model.training
    t = torch.arange(200, dtype=torch.float32)
    quantiles, _ = pipeline.predict_quantiles(
        [100 + 10 * torch.sin(2 * torch.pi * t / 24)], prediction_length=24
    )
    assert quantiles[0].shape[1] == 24 and torch.isfinite(quantiles[0]).all()


def test_pretrain_script_is_deterministic_and_saves_a_loadable_model(tmp_path: Path) -> None:
    import json

    import numpy as np

    from trainer.pretrain_tiny import main, synthetic_corpus

    a, b = synthetic_corpus(40, seed=3), synthetic_corpus(40, seed=3)
    assert all(np.array_equal(x["target"], y["target"]) for x, y in zip(a, b, strict=True))
    assert any("past_covariates" in x for x in synthetic_corpus(200, seed=0))
    assert main(["--out", str(tmp_path / "m"), "--steps", "3", "--n-series", "60", "--batch-size", "8"]) == 0
    info = json.loads((tmp_path / "m" / "training_info.json").read_text())
    assert info["steps"] == 3 and info["corpus"]["n_series"] == 60 and info["param_count"] == 54144
    _, loaded = load_base_model(str(tmp_path / "m"))
    assert loaded.kind == "local" and loaded.param_count == 54144
