"""GluonTS metrics (seasonality, WQL, MASE) and seasonal naive against hand-computed values.

Each case writes out the arithmetic GluonTS does (``gluonts.ev.stats.quantile_loss``,
``gluonts.ev.ts_stats.seasonal_error``, ``MeanWeightedSumQuantileLoss``, ``MASE[0.5]``)
on small arrays.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.metrics import (
    combine,
    get_seasonality,
    mase,
    norm_freq_str,
    pinball,
    quantile_loss,
    resolve_season,
    score_items,
    seasonal_error,
    seasonal_naive,
    wql,
)

LEVELS = (0.1, 0.5, 0.9)


def _score(future, preds, past, season, ids=None):  # noqa: ANN001, ANN202
    future = np.atleast_2d(np.asarray(future, dtype=float))
    return score_items(
        item_ids=ids or [f"i{k}" for k in range(future.shape[0])],
        future=future,
        quantile_preds=np.asarray(preds, dtype=float).reshape(*future.shape, -1),
        quantile_levels=LEVELS if np.asarray(preds).shape[-1] == 3 else (0.5,),
        past=[np.asarray(p, dtype=float) for p in past],
        season=season,
    )


@pytest.mark.parametrize(
    ("freq", "season"),
    [("h", 24), ("H", 24), ("2h", 12), ("5h", 1), ("30min", 48), ("15min", 96), ("T", 1440),
     ("min", 1440), ("s", 3600), ("S", 3600), ("10s", 360), ("D", 1), ("7D", 1), ("W", 1),
     ("W-MON", 1), ("ME", 12), ("M", 12), ("MS", 12), ("QE", 4), ("Q", 4), ("QS", 4),
     ("YE", 1), ("YS", 1), ("B", 5)],
)  # fmt: skip
def test_get_seasonality_is_gluonts_table(freq: str, season: int) -> None:
    # gluonts/time_feature/seasonality.py: DEFAULT_SEASONALITIES, divmod by the multiple
    assert get_seasonality(freq) == season


def test_norm_freq_str_maps_start_aliases_to_ends() -> None:
    assert [norm_freq_str(f) for f in ("W-SUN", "MS", "QS-JAN", "YS-JAN", "min", "s", "ME")] == [
        "W", "ME", "QE", "YE", "min", "s", "ME",
    ]  # fmt: skip


def test_unknown_frequency_says_what_to_use() -> None:
    with pytest.raises(ValueError, match="pandas alias such as h"):
        get_seasonality("fortnightly")


def test_season_override_comes_from_the_spec() -> None:
    assert resolve_season("h", "auto") == (24, "gluonts")
    assert resolve_season("D", None) == (1, "gluonts")
    assert resolve_season("h", 7) == (7, "spec")
    with pytest.raises(ValueError, match="positive"):
        resolve_season("h", 0)


def test_quantile_loss_is_twice_the_pinball() -> None:
    y, yhat = np.array([4.0, 6.0]), np.array([2.0, 9.0])
    # q = 0.1: under by 2 -> 2 * 0.1 * 2 = 0.4; over by 3 -> 2 * 0.9 * 3 = 5.4
    np.testing.assert_allclose(quantile_loss(y, yhat, 0.1), [0.4, 5.4])
    np.testing.assert_allclose(quantile_loss(y, yhat, 0.1), 2 * pinball(y, yhat, 0.1))


def test_hourly_season_24_by_hand() -> None:
    # past: 0..23, then 3, 5. seasonal error, m = 24: |3 - 0| = 3, |5 - 1| = 4 -> 3.5
    past = np.concatenate([np.arange(24.0), [3.0, 5.0]])
    season = get_seasonality("h")
    assert seasonal_error(past, season) == pytest.approx(3.5)
    y = np.array([4.0, 6.0])
    q10, q50, q90 = np.array([2.0, 5.0]), np.array([3.0, 8.0]), np.array([5.0, 9.0])
    preds = np.stack([q10, q50, q90], axis=-1)
    # quantile losses: q0.1: 2*0.1*2 + 2*0.1*1 = 0.6; q0.5: 2*0.5*1 + 2*0.5*2 = 3.0;
    # q0.9: 2*0.1*1 + 2*0.1*3 = 0.8. sum |y| = 10 -> mean(0.06, 0.30, 0.08) = 0.44 / 3
    assert wql(y, preds, LEVELS) == pytest.approx(0.44 / 3)
    # MASE: |4 - 3| = 1, |6 - 8| = 2 -> 1.5 / 3.5
    assert mase(y, q50, past, season) == pytest.approx(3 / 7)
    # seasonal naive repeats past[-24:] = [2, 3, ..., 23, 3, 5]: forecasts 2, 3
    point, quantiles = seasonal_naive(past, 2, season, LEVELS)
    np.testing.assert_array_equal(point, [2.0, 3.0])
    # its WQL: every level is the point: sum_q 2 * q * (2 + 3) / 10 / 3 levels = mean(q) = 0.5
    assert wql(y, quantiles, LEVELS) == pytest.approx(0.5)
    assert mase(y, point, past, season) == pytest.approx(2.5 / 3.5)
    scores = _score(y, preds, [past], season)
    assert scores.wql() == pytest.approx(0.44 / 3) and scores.mase() == pytest.approx(3 / 7)


def test_daily_season_is_1_not_7() -> None:
    past = np.array([1.0, 3.0, 2.0, 6.0, 4.0, 4.0, 5.0, 7.0, 6.0])
    season = get_seasonality("D")
    assert season == 1
    # m = 1: |3-1| + |2-3| + |6-2| + |4-6| + 0 + |5-4| + |7-5| + |6-7| = 13 over 8 pairs
    assert seasonal_error(past, season) == pytest.approx(13 / 8)
    # (m = 7 would be (|7-1| + |6-3|) / 2 = 4.5)
    assert seasonal_error(past, 7) == pytest.approx(4.5)
    y, median = np.array([8.0, 5.0]), np.array([8.0, 7.0])
    assert mase(y, median, past, season) == pytest.approx(1.0 / (13 / 8))
    point, _ = seasonal_naive(past, 2, season)
    np.testing.assert_array_equal(point, [6.0, 6.0])  # the last value
    assert mase(y, point, past, season) == pytest.approx(1.5 / (13 / 8))


def test_weekly_season_1_by_hand() -> None:
    past = np.array([10.0, 12.0, 11.0, 15.0])
    season = get_seasonality("W")
    assert season == 1 and get_seasonality("W-MON") == 1
    # seasonal error: (2 + 1 + 4) / 3
    y, preds = np.array([14.0]), np.array([[13.0, 16.0, 18.0]])
    assert mase(y, preds[:, 1], past, season) == pytest.approx(2 / (7 / 3))
    # q0.1: under by 1 -> 0.2; q0.5: over by 2 -> 2.0; q0.9: over by 4 -> 2*0.1*4 = 0.8
    # mean over levels (3.0 / 3) / sum |y| 14
    assert wql(y, preds, LEVELS) == pytest.approx(1 / 14)


def test_thirty_minute_season_48_by_hand() -> None:
    season = get_seasonality("30min")
    assert season == 48  # 1440 minutes a day / 30
    past = np.concatenate([np.arange(48.0), [10.0, 4.0]])
    # m = 48: |10 - 0| = 10, |4 - 1| = 3 -> 6.5
    assert seasonal_error(past, season) == pytest.approx(6.5)
    assert mase(np.array([2.0]), np.array([0.0]), past, season) == pytest.approx(2 / 6.5)
    point, _ = seasonal_naive(past, 3, season)
    np.testing.assert_array_equal(point, [2.0, 3.0, 4.0])  # past[2], past[3], past[4]


def test_season_longer_than_the_past_falls_back_to_1() -> None:
    past = np.array([1.0, 2.0, 4.0])
    # GluonTS: seasonality > time_length -> 1: (1 + 2) / 2
    assert seasonal_error(past, 24) == pytest.approx(1.5)
    assert math.isnan(mase(np.array([1.0]), np.array([1.0]), np.ones(5), 1))  # flat past: no scale


def test_season_override_changes_mase() -> None:
    past = np.array([1.0, 2.0, 3.0, 4.0])
    # season 2: (|3 - 1| + |4 - 2|) / 2 = 2; season 1: 1
    assert mase(np.array([5.0, 6.0]), np.array([5.0, 8.0]), past, 2) == pytest.approx(0.5)
    assert mase(np.array([5.0, 6.0]), np.array([5.0, 8.0]), past, 1) == pytest.approx(1.0)


def test_overall_wql_sums_over_items_and_windows_before_dividing() -> None:
    w1 = _score([[1.0], [9.0]], [[[2.0]], [[9.0]]], [[1.0, 2.0], [8.0, 9.0]], 1)
    w2 = _score([[2.0], [8.0]], [[[2.0]], [[6.0]]], [[1.0, 2.0], [8.0, 9.0]], 1)
    # level 0.5 quantile losses: w1 [1, 0], w2 [0, 2]; sum |y| = 1 + 9 + 2 + 8 = 20
    both = combine([w1, w2])
    assert both.wql() == pytest.approx(3 / 20)
    assert w1.wql() == pytest.approx(1 / 10) and w2.wql() == pytest.approx(2 / 10)
    # MASE: every item's scale is 1; scaled errors 1, 0, 0, 2 over 4 item-windows
    assert both.mase() == pytest.approx(0.75)
    # per item over both windows: a: (1 + 0) / (1 + 2); b: (0 + 2) / (9 + 8)
    assert both.item_wql() == pytest.approx([1 / 3, 2 / 17])
    assert both.item_mase() == pytest.approx([0.5, 1.0])


def test_nan_targets_are_masked() -> None:
    y = np.array([4.0, np.nan, 6.0])
    preds = np.array([[3.0], [100.0], [8.0]])
    # the NaN step counts nowhere: 2 * 0.5 * (1 + 2) / (4 + 6)
    assert wql(y, preds, [0.5]) == pytest.approx(0.3)
    past = np.array([0.0, 2.0, np.nan, 4.0, 6.0])
    # pairs with a NaN left out: |2 - 0|, |6 - 4| -> 2
    assert seasonal_error(past, 1) == pytest.approx(2.0)
    assert mase(y, preds[:, 0], past, 1) == pytest.approx(1.5 / 2)
    scores = _score([y], preds.reshape(1, 3, 1), [past], 1)
    assert scores.wql() == pytest.approx(0.3) and scores.mase() == pytest.approx(0.75)


def test_seasonal_naive_fills_nan_in_the_last_season() -> None:
    values = np.array([1.0, 2.0, 3.0, np.nan, 5.0, np.nan, np.nan, 8.0])
    # last season (3): [nan, nan, 8]; index 5 takes index 2 (3.0); index 6 takes index 0
    # (index 3 is NaN too) -> 1.0
    point, quantiles = seasonal_naive(values, 5, 3, LEVELS)
    np.testing.assert_array_equal(point, [3.0, 1.0, 8.0, 3.0, 1.0])
    assert quantiles.shape == (5, 3) and np.array_equal(quantiles[:, 2], point)
    # no earlier season at that phase: the last finite value before it
    np.testing.assert_array_equal(seasonal_naive(np.array([np.nan, 7.0, np.nan]), 2, 2)[0], [7.0, 7.0])
    # an earlier season at that phase wins over the last value
    np.testing.assert_array_equal(seasonal_naive(np.array([4.0, 7.0, np.nan]), 2, 2)[0], [7.0, 4.0])
    # shorter than a season: the mean of the finite values (GluonTS)
    np.testing.assert_array_equal(seasonal_naive(np.array([1.0, np.nan, 5.0]), 2, 24)[0], [3.0, 3.0])


def test_all_nan_past_has_no_forecast_and_is_left_out_with_a_count() -> None:
    point, _ = seasonal_naive(np.full(6, np.nan), 2, 1)
    assert np.isnan(point).all()
    preds = np.stack([seasonal_naive(p, 1, 1, [0.5])[1] for p in ([np.nan, np.nan], [1.0, 3.0])])
    scores = _score([[5.0], [4.0]], preds, [[np.nan, np.nan], [1.0, 3.0]], 1)
    # only the second item counts: 2 * 0.5 * |4 - 3| / 4, MASE 1 / 2
    assert scores.wql() == pytest.approx(0.25) and scores.mase() == pytest.approx(0.5)
    assert scores.skipped() == {"no_forecast": 1, "no_mase": 1}
    assert scores.item_wql()[0] is None


def test_undefined_scores_are_none_and_bad_shapes_refused() -> None:
    flat = _score([[1.0]], [[[1.0]]], [[2.0, 2.0, 2.0]], 1)
    assert flat.mase() is None and flat.wql() == 0.0
    assert _score([[0.0]], [[[1.0]]], [[1.0, 2.0]], 1).wql() is None
    with pytest.raises(ValueError, match="shape"):
        wql(np.zeros(3), np.zeros((3, 2)), [0.5])
    with pytest.raises(ValueError, match="zero"):
        wql(np.zeros(2), np.zeros((2, 1)), [0.5])
    with pytest.raises(ValueError, match="0.5"):
        score_items(
            item_ids=["a"], future=np.ones((1, 1)), quantile_preds=np.ones((1, 1, 1)),
            quantile_levels=[0.1], past=[np.ones(3)], season=1,
        )  # fmt: skip
