"""Forecasters: no look-ahead, shapes, accuracy on synthetic diurnal series, refit schedule."""

import numpy as np
import pytest

from sageserve_env.workload.forecast import ArimaForecaster, SeasonalNaiveForecaster, normalized_mae


def diurnal(days: float, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Per-minute prompt tokens with a daily cycle (and a 6-hour one), multiplicative noise."""
    t = np.arange(int(days * 1440))
    level = 1e5 * (1 + 0.6 * np.sin(2 * np.pi * t / 1440) + 0.2 * np.sin(2 * np.pi * t / 360))
    return level * (1 + noise * np.random.default_rng(seed).normal(size=len(t)))


def forecasts_at(model, series, times, horizon=60):
    return [model.forecast(series[:t], horizon) for t in times]


@pytest.mark.parametrize("make", [lambda: SeasonalNaiveForecaster(),
                                  lambda: ArimaForecaster(refit_every=60, window=720)])
def test_no_future_leakage(make):
    """Forecasts made with history [0, t) ignore a spike planted after t, across several refits
    and extensions (calls every 20 minutes, refits every 60)."""
    base = diurnal(1.5, noise=0.05)
    spiked = base.copy()
    cut = 1440
    spiked[cut:cut + 30] *= 50
    times = range(cut - 200, cut + 1, 20)
    a, b = make(), make()
    for fa, fb in zip(forecasts_at(a, base, times), forecasts_at(b, spiked, times)):
        np.testing.assert_array_equal(fa, fb)
    if isinstance(a, ArimaForecaster):  # the check has teeth: several fits, the spike shows once past
        assert a.fits >= 3 and a.fallbacks == 0
        assert not np.array_equal(a.forecast(base[:cut + 40], 60), b.forecast(spiked[:cut + 40], 60))


@pytest.mark.parametrize("model", [SeasonalNaiveForecaster(), ArimaForecaster()])
@pytest.mark.parametrize("length", [0, 10, 300, 1500])
def test_shape_and_non_negative(model, length):
    history = np.maximum(diurnal(1.1, noise=0.8)[:length] - 8e4, 0.0)  # many zeros, heavy noise
    fc = model.forecast(history, 90)
    assert fc.shape == (90,)
    assert np.all(np.isfinite(fc)) and np.all(fc >= 0)


def test_seasonal_naive_exact_on_periodic_series():
    period = np.random.default_rng(3).uniform(0, 100, size=1440)
    series = np.tile(period, 4)
    model = SeasonalNaiveForecaster(season=1440)
    for t in (1440, 2000, 3000):
        np.testing.assert_array_equal(model.forecast(series[:t], 60), series[t:t + 60])
    # horizons longer than a season repeat the last season
    np.testing.assert_array_equal(model.forecast(series[:1440], 2000), series[1440:3440])


def test_seasonal_naive_short_history_uses_last_hour_mean():
    history = np.r_[np.zeros(100), np.full(60, 7.0)]
    np.testing.assert_array_equal(SeasonalNaiveForecaster().forecast(history, 5), np.full(5, 7.0))
    np.testing.assert_array_equal(SeasonalNaiveForecaster().forecast(np.zeros(0), 3), np.zeros(3))


def test_arima_accuracy_on_smooth_diurnal_signal():
    """ARIMA(3,1,2) an hour ahead on a smooth daily signal: small normalized MAE. (It does NOT
    beat seasonal-naive on a strictly day-periodic synthetic series: the seasonal copy is exact
    there, and with noise it stays ahead at 5% noise, roughly ties at 15%.)"""
    series = diurnal(2)
    model = ArimaForecaster(refit_every=240)
    errors = [normalized_mae(series[t:t + 60], model.forecast(series[:t], 60)) for t in range(1440, 2820, 60)]
    assert np.mean(errors) < 0.1
    assert model.fallbacks == 0


def test_refit_schedule():
    series = diurnal(1, noise=0.05)
    model = ArimaForecaster(refit_every=60, window=600, min_history=120)
    model.forecast(series[:100], 60)  # too short: fallback, no fit
    assert (model.fits, model.fallbacks) == (0, 1)
    for t in range(200, 400, 10):  # 20 calls over 200 minutes: fits at 200, 260, 320, 380
        model.forecast(series[:t], 60)
    assert model.fits == 4
    model.forecast(series[:150], 60)  # history went back (new episode): refit at once
    assert model.fits == 5


def test_arima_extension_matches_refiltering():
    """Between refits the model is extended with the new minutes: same forecast as applying the
    fitted parameters to the whole window again."""
    series = diurnal(1, noise=0.05)
    model = ArimaForecaster(refit_every=1000, window=600)
    model.forecast(series[:600], 60)
    extended = model.forecast(series[:645], 60)
    assert model.fits == 1
    refiltered = model._results.model.clone(series[:645] / model._scale).filter(model._params)
    np.testing.assert_allclose(extended, np.maximum(refiltered.forecast(60) * model._scale, 0), rtol=1e-6)


def test_normalized_mae():
    assert normalized_mae([1, 2, 3], [1, 2, 3]) == 0.0
    assert normalized_mae([2, 2], [1, 4]) == pytest.approx(3 / 4)
    assert normalized_mae([0, 0], [0, 0]) == 0.0
    assert np.isnan(normalized_mae([0, 0], [1, 0]))
