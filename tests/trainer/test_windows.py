"""Rolling-origin windows: train | validation | K test windows, no value leaking backwards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.runspec import DataSpec
from trainer.data import load_dataset
from trainer.windows import min_length

H, K = 3, 3
START = np.datetime64("2024-03-01T00:00:00", "s")
SPEC = DataSpec.from_dict({"frequency": "h", "past_covariates": ["seen"], "known_covariates": ["plan"]})
TRAIN, VALIDATION = 0, 1  # marker blocks: training values < 1000, validation 1000s, test-k (k+1)*1000s


def _markers(n: int) -> np.ndarray:
    """Each step's value says which part it belongs to: ``block * 1000 + step``."""
    block = np.zeros(n, dtype=np.int64)
    block[n - (K + 1) * H :] = VALIDATION
    for k in range(1, K + 1):
        block[n - (K - k + 1) * H :] = k + 1
    return (block * 1000 + np.arange(n)).astype(np.float64)


@pytest.fixture
def dataset(tmp_path: Path):
    lengths = {"a": 20, "b": 27, "c": min_length(H, K, 2)}
    parts = []
    for item, n in lengths.items():
        values = _markers(n)
        parts.append({
            "item_id": [item] * n,
            "timestamp": START + np.arange(n) * np.timedelta64(1, "h"),
            "target": values, "seen": values, "plan": values,
        })  # fmt: skip
    table = pa.concat_tables(pa.table(p) for p in parts)
    pq.write_table(table, tmp_path / "data.parquet")
    ds = load_dataset([tmp_path / "data.parquet"], SPEC, prediction_length=H, backtest_windows=K, min_past=2)
    return ds, lengths


def _block(values: np.ndarray) -> set[int]:
    return {int(v) // 1000 for v in np.asarray(values)}


def test_no_test_value_reaches_training_or_validation(dataset) -> None:
    ds, lengths = dataset
    assert ds.item_ids == ("a", "b", "c")
    for i, item in enumerate(ds.item_ids):
        train = ds.train_inputs[i]
        assert train["target"].size == lengths[item] - (K + 1) * H
        assert _block(train["target"]) == {TRAIN}
        assert _block(train["past_covariates"]["seen"]) == _block(train["past_covariates"]["plan"]) == {TRAIN}
        assert train["future_covariates"] == {"plan": None}
        val = ds.validation.inputs[i]
        assert _block(val["target"]) == _block(val["past_covariates"]["seen"]) == {TRAIN}
        assert _block(ds.validation.past[i]) == {TRAIN}
        assert _block(ds.validation.future[i]) == _block(val["future_covariates"]["plan"]) == {VALIDATION}


def test_k_windows_of_the_horizon_oldest_first(dataset) -> None:
    ds, lengths = dataset
    assert [w.name for w in ds.test_windows] == [f"test-{k}" for k in range(1, K + 1)]
    for k, window in enumerate(ds.test_windows, start=1):
        assert window.future.shape == (3, H) and window.prediction_length == H and window.frequency == "h"
        for i, item in enumerate(window.item_ids):
            context = window.inputs[i]
            assert context["target"].size == lengths[item] - (K - k + 1) * H  # everything before the start
            assert _block(context["target"]) == set(range(k + 1))  # training, validation, earlier tests
            assert max(_block(context["past_covariates"]["plan"])) == k  # up to the window before
            assert _block(window.future[i]) == _block(context["future_covariates"]["plan"]) == {k + 1}
            np.testing.assert_array_equal(window.past[i], context["target"])


def test_starts_are_each_windows_first_forecast_time_in_utc(dataset) -> None:
    ds, lengths = dataset
    for back, window in zip(range(K + 1, 0, -1), (ds.validation, *ds.test_windows), strict=True):
        expected = tuple(
            f"{np.datetime_as_string(START + (lengths[i] - back * H) * np.timedelta64(1, 'h'), unit='s')}Z"
            for i in ds.item_ids
        )
        assert window.starts == expected
    assert ds.test_windows[-1].starts[0] == "2024-03-01T17:00:00Z"  # a: 20 steps, the last 3 forecast
