"""The child's inputs files: training inputs and forecast windows through ``.npz``, no pickle."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.runspec import DataSpec
from trainer.data import EvalSet, load_dataset
from trainer.data_validation import DataValidationError
from trainer.inputs_file import load_window, save_window

START = np.datetime64("2024-03-01T00:00:00", "s")


def _window(tmp_path: Path) -> EvalSet:
    """A validation window with a filled gap, a NaN, a numeric and a string covariate."""
    hours = np.r_[0:6, 8:30]  # a gap of two hours
    n = hours.size
    target = np.arange(n, dtype=np.float64)
    target[3] = np.nan
    rows = {
        "item_id": ["a"] * n + ["b"] * 30,
        "timestamp": np.r_[
            START + hours * np.timedelta64(1, "h"), START + np.arange(30) * np.timedelta64(1, "h")
        ],
        "target": np.r_[target, np.arange(30.0)],
        "price": np.r_[np.arange(n) * 0.5, np.ones(30)],
        "day": ["mon", "tue"] * (n // 2) + ["wed"] * 30,
    }
    pq.write_table(pa.table(rows), tmp_path / "w.parquet")
    spec = DataSpec.from_dict({"frequency": "h", "past_covariates": ["price"], "known_covariates": ["day"]})
    ds = load_dataset([tmp_path / "w.parquet"], spec, prediction_length=4, backtest_windows=2, min_past=2)
    return ds.validation


def _same(a: EvalSet, b: EvalSet) -> None:
    for name in ("name", "item_ids", "starts", "prediction_length", "frequency"):
        assert getattr(a, name) == getattr(b, name), name
    np.testing.assert_array_equal(a.future, b.future)
    assert len(a.inputs) == len(b.inputs) == len(b.past)
    for x, y, past in zip(a.inputs, b.inputs, b.past, strict=True):
        np.testing.assert_array_equal(x["target"], y["target"])
        np.testing.assert_array_equal(past, y["target"])
        assert x["past_covariates"].keys() == y["past_covariates"].keys()
        for key, values in x["past_covariates"].items():
            np.testing.assert_array_equal(values, y["past_covariates"][key])
        np.testing.assert_array_equal(x["future_covariates"]["day"], y["future_covariates"]["day"])


def test_a_window_round_trips_with_nan_and_covariates(tmp_path: Path) -> None:
    window = _window(tmp_path)
    first = window.inputs[0]
    assert np.isnan(first["target"]).sum() == 3  # the data's NaN and the two filled hours
    assert list(first["past_covariates"]["day"][5:8]) == ["tue", "", ""]
    loaded = load_window(save_window(window, tmp_path / "validation.npz"))
    _same(window, loaded)
    assert np.isnan(loaded.inputs[0]["target"]).sum() == 3
    assert loaded.inputs[0]["past_covariates"]["day"].dtype.kind == "U"
    with np.load(tmp_path / "validation.npz", allow_pickle=False) as data:  # nothing pickled
        assert not any(data[k].dtype == object for k in data.files)


def test_a_window_whose_past_is_not_its_context(tmp_path: Path) -> None:
    window = _window(tmp_path)
    other = dataclasses.replace(window, past=[p[-5:] for p in window.past])
    loaded = load_window(save_window(other, tmp_path / "w.npz"))
    for a, b in zip(other.past, loaded.past, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_file_that_is_not_a_window_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="not a saved window"):
        load_window(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DataValidationError, match="other.npz"):
        load_window(tmp_path / "other.npz")
