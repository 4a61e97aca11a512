"""The synthetic dataset: deterministic, long format, split by month."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from trainer.synthetic import KNOWN_COVARIATE, PAST_COVARIATE, generate_dataset


def _read_all(files: list[Path]) -> dict[str, np.ndarray]:
    tables = [pq.read_table(f) for f in files]
    return {
        name: np.concatenate([t.column(name).to_numpy() for t in tables]) for name in tables[0].column_names
    }


def test_same_arguments_give_the_same_data(tmp_path: Path) -> None:
    first = generate_dataset(tmp_path / "a", n_items=5, length=24 * 40, seed=3)
    second = generate_dataset(tmp_path / "b", n_items=5, length=24 * 40, seed=3)
    assert [f.relative_to(tmp_path / "a") for f in first] == [f.relative_to(tmp_path / "b") for f in second]
    a, b = _read_all(first), _read_all(second)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_another_seed_gives_other_values(tmp_path: Path) -> None:
    a = _read_all(generate_dataset(tmp_path / "a", n_items=3, length=100, seed=0))
    b = _read_all(generate_dataset(tmp_path / "b", n_items=3, length=100, seed=1))
    assert not np.allclose(a["target"], b["target"])


def test_files_are_split_by_month_and_item_group(tmp_path: Path) -> None:
    files = generate_dataset(tmp_path, n_items=5, length=24 * 45, items_per_file=2)
    names = sorted(str(f.relative_to(tmp_path)) for f in files)
    assert names == [f"2024/{month}/part-{part:03d}.parquet" for month in ("01", "02") for part in range(3)]
    data = _read_all(files)
    assert set(data) == {"item_id", "timestamp", "target", PAST_COVARIATE, KNOWN_COVARIATE}
    assert len(data["target"]) == 5 * 24 * 45
    assert len(np.unique(data["item_id"])) == 5
    assert set(np.unique(data[KNOWN_COVARIATE])) == {0.0, 1.0}
    assert np.all(data["target"] > 0)


def test_without_covariates_only_the_core_columns(tmp_path: Path) -> None:
    files = generate_dataset(tmp_path, n_items=2, length=48, with_covariates=False)
    assert pq.read_schema(files[0]).names == ["item_id", "timestamp", "target"]


def test_daily_frequency(tmp_path: Path) -> None:
    files = generate_dataset(tmp_path, n_items=2, length=70, freq="D")
    stamps = np.unique(_read_all(files)["timestamp"])
    assert np.all(np.diff(stamps) == np.timedelta64(1, "D"))


def test_unsupported_frequency_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="freq"):
        generate_dataset(tmp_path, freq="W")
