"""Pinned bases: tiny, the bundled tiny-pretrained, local folders and Hub ids (a faked offline cache)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from trainer.base_model import (
    BUNDLED_TINY_DIR,
    BaseRef,
    ModelLoadError,
    resolve_base,
    weights_sha256,
)

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER_SHA = "fedcba9876543210fedcba9876543210fedcba98"


def _save_tiny(folder: Path, seed: int = 0) -> None:
    from chronos.chronos2 import Chronos2Pipeline

    from trainer.model import load_base_model

    model, _ = load_base_model("tiny", seed=seed)
    Chronos2Pipeline(model=model).save_pretrained(folder)


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline Hugging Face cache holding acme/tiny-chronos at two commits (main = SHA)."""
    cache = tmp_path / "hf" / "hub"
    repo = cache / "models--acme--tiny-chronos"
    _save_tiny(repo / "snapshots" / SHA, seed=0)
    _save_tiny(repo / "snapshots" / OTHER_SHA, seed=1)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SHA)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_tiny_names_resolve_without_weights() -> None:
    assert resolve_base("tiny") == BaseRef(base="tiny", kind="tiny", location="tiny-32", revision=None)
    assert resolve_base("tiny-64").location == "tiny-64"


def test_bundled_tiny_pretrained_is_pinned_by_its_weights() -> None:
    ref = resolve_base("tiny-pretrained")
    assert ref.kind == "bundled" and Path(ref.location) == BUNDLED_TINY_DIR
    digest = hashlib.sha256((BUNDLED_TINY_DIR / "model.safetensors").read_bytes()).hexdigest()
    assert ref.revision == digest
    assert (BUNDLED_TINY_DIR / "model.safetensors").stat().st_size < 1_000_000


def test_local_folder_revision_is_the_weights_sha256(tmp_path: Path) -> None:
    _save_tiny(tmp_path / "m")
    ref = resolve_base(str(tmp_path / "m"))
    assert ref.kind == "local" and ref.location == str((tmp_path / "m").resolve())
    assert ref.revision == weights_sha256(tmp_path / "m") and len(ref.revision) == 64
    _save_tiny(tmp_path / "m", seed=3)
    assert resolve_base(str(tmp_path / "m")).revision != ref.revision


def test_local_folder_problems_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_base(str(tmp_path / "nowhere"))
    with pytest.raises(ModelLoadError, match="config.json"):
        resolve_base(str(tmp_path))


def test_hub_id_resolves_to_the_cached_commit(hub_cache: Path) -> None:
    ref = resolve_base("acme/tiny-chronos")
    assert ref.kind == "hub" and ref.revision == SHA and ref.model_id == "acme/tiny-chronos"
    assert Path(ref.location) == hub_cache / "models--acme--tiny-chronos" / "snapshots" / SHA
    pinned = resolve_base(f"acme/tiny-chronos@{OTHER_SHA}")
    assert pinned.revision == OTHER_SHA and Path(pinned.location).name == OTHER_SHA
    assert BaseRef.from_dict(pinned.to_dict()) == pinned


def test_a_snapshot_folder_is_its_hub_commit(hub_cache: Path) -> None:
    folder = hub_cache / "models--acme--tiny-chronos" / "snapshots" / SHA
    ref = resolve_base(str(folder))
    assert ref.kind == "hub" and ref.revision == SHA and ref.model_id == "acme/tiny-chronos"


def test_unknown_hub_id_offline_says_so(hub_cache: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"'acme/missing'.*HF_HUB_OFFLINE") as err:
        resolve_base("acme/missing")
    assert "\n" not in str(err.value)
    with pytest.raises(ModelLoadError, match="acme/tiny-chronos@nope"):
        resolve_base("acme/tiny-chronos@nope")


def test_not_a_base_at_all() -> None:
    with pytest.raises(ModelLoadError, match="neither tiny"):
        resolve_base("just-a-word")
    with pytest.raises(ModelLoadError, match="empty"):
        resolve_base(" ")


def test_base_ref_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="kind"):
        BaseRef(base="x", kind="s3", location="x", revision=None)
    with pytest.raises(ValueError, match="location"):
        BaseRef.from_dict({"base": "x", "kind": "local"})
