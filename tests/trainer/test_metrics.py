"""WQL, MASE and the seasonal-naive baseline against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.data import EvalSet
from trainer.metrics import (
    evaluate,
    mase,
    pinball,
    season_for_frequency,
    seasonal_naive,
    wql,
)


def test_pinball_penalises_under_and_over_forecasts_asymmetrically() -> None:
    np.testing.assert_allclose(pinball(np.array([2.0]), np.array([1.0]), 0.9), [0.9])
    np.testing.assert_allclose(pinball(np.array([2.0]), np.array([3.0]), 0.9), [0.1])


def test_wql_by_hand() -> None:
    # level 0.5, y = [1, 2], yhat = [1, 3]: pinball = [0, 0.5]; 2 * 0.5 / 3
    assert wql(np.array([1.0, 2.0]), np.array([[1.0], [3.0]]), [0.5]) == pytest.approx(1 / 3)
    # levels 0.1 and 0.9 around y = 2: each pinball 0.1, each weighted 2 * 0.1 / 2
    assert wql(np.array([2.0]), np.array([[1.0, 3.0]]), [0.1, 0.9]) == pytest.approx(0.1)
    # perfect forecast
    y = np.array([[1.0, -2.0], [3.0, 4.0]])
    assert wql(y, np.repeat(y[..., None], 3, axis=-1), [0.1, 0.5, 0.9]) == 0.0


def test_wql_sums_over_items_before_dividing() -> None:
    y = np.array([[1.0], [9.0]])
    preds = np.array([[[2.0]], [[9.0]]])
    # pinball(0.5) = [0.5, 0]; 2 * 0.5 / 10 (not the mean of per-item ratios)
    assert wql(y, preds, [0.5]) == pytest.approx(0.1)


def test_wql_rejects_bad_shapes_and_zero_targets() -> None:
    with pytest.raises(ValueError, match="shape"):
        wql(np.zeros(3), np.zeros((3, 2)), [0.5])
    with pytest.raises(ValueError, match="zero"):
        wql(np.zeros(2), np.zeros((2, 1)), [0.5])


def test_mase_by_hand() -> None:
    past = np.array([1.0, 2.0, 3.0, 4.0])
    # season 1: scale mean |diff| = 1; MAE of [0, 2] = 1
    assert mase(np.array([5.0, 6.0]), np.array([5.0, 8.0]), past, 1) == pytest.approx(1.0)
    # season 2: scale mean(|3-1|, |4-2|) = 2
    assert mase(np.array([5.0, 6.0]), np.array([5.0, 8.0]), past, 2) == pytest.approx(0.5)
    # season longer than the past falls back to 1
    assert mase(np.array([5.0]), np.array([6.0]), past, 24) == pytest.approx(1.0)
    assert math.isnan(mase(np.array([1.0]), np.array([1.0]), np.ones(5), 1))


def test_seasonal_naive_repeats_the_last_season() -> None:
    point, quantiles = seasonal_naive(np.arange(1.0, 7.0), 5, 3, [0.1, 0.5, 0.9])
    np.testing.assert_array_equal(point, [4, 5, 6, 4, 5])
    assert quantiles.shape == (5, 3)
    np.testing.assert_array_equal(quantiles[:, 0], point)
    short, _ = seasonal_naive(np.array([1.0, 7.0]), 3, 24)
    np.testing.assert_array_equal(short, [7, 7, 7])


@pytest.mark.parametrize(
    ("freq", "season"),
    [("h", 24), ("D", 7), ("15min", 96), ("2h", 12), ("W", 52), ("W-MON", 52), ("MS", 12),
     ("B", 5), ("7h", 1)],
)  # fmt: skip
def test_season_for_frequency(freq: str, season: int) -> None:
    assert season_for_frequency(freq) == season


def test_evaluate_scores_model_and_baseline() -> None:
    from chronos.chronos2 import Chronos2Pipeline

    from trainer.model import load_base_model

    rng = np.random.default_rng(0)
    t = np.arange(24 * 6)
    series = [10 + np.sin(2 * np.pi * t / 24 + k) + rng.normal(0, 0.1, t.size) for k in range(3)]
    past = [s[:-24].astype(np.float32) for s in series]
    eval_set = EvalSet(
        item_ids=("a", "b", "c"),
        inputs=[{"target": p} for p in past],
        past=past,
        future=np.stack([s[-24:] for s in series]),
        prediction_length=24,
        frequency="h",
    )
    model, _ = load_base_model("tiny", seed=0)
    scores = evaluate(Chronos2Pipeline(model=model), eval_set, [0.1, 0.5, 0.9])
    assert scores["season"] == 24 and scores["n_items"] == 3
    naive = np.stack([seasonal_naive(p, 24, 24)[0] for p in past])
    expected = np.abs(eval_set.future - naive).sum() / np.abs(eval_set.future).sum()
    assert scores["seasonal_naive_wql"] == pytest.approx(expected)
    assert math.isfinite(scores["model_wql"]) and math.isfinite(scores["model_mase"])
