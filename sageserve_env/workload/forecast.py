"""Demand forecasters on per-minute series (e.g. the IW prompt tokens per minute of one endpoint).

Every forecaster sees only the past: ``forecast(history, horizon)`` receives the values of minutes
``[0, t)`` and returns ``horizon`` non-negative values for minutes ``[t, t + horizon)``. The
original SageServe fitted its ARIMA on the whole evaluation week, so its forecasts knew the
future; here a fit only ever touches the history it is given.

``ArimaForecaster`` keeps fitted state for ONE series: use one object per endpoint. It expects
successive calls to pass a growing history of the same series (as a simulation does); a history
that is shorter than, or disagrees with, what it has seen (a new episode, another series) makes
it refit from scratch, so reuse is safe but wasteful.

Speed: a fit on a day of minutes takes ~0.3 s on one idle core. Under CPU contention (parallel
evaluation workers) a multi-threaded OpenBLAS slows it about tenfold: run such processes with
``OPENBLAS_NUM_THREADS=1``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from statsmodels.tools.sm_exceptions import ConvergenceWarning, EstimationWarning
from statsmodels.tsa.arima.model import ARIMA


def normalized_mae(actual: np.ndarray, predicted: np.ndarray) -> float:
    """``sum|a - p| / sum|a|``: the absolute error as a fraction of the actual volume, so series of
    very different scale compare (0 is perfect; predicting zeros scores 1). When the actual series
    sums to zero the ratio is undefined: 0.0 if the prediction is zero too, else ``nan``."""
    a = np.asarray(actual, dtype=float)
    p = np.asarray(predicted, dtype=float)
    err = float(np.abs(a - p).sum())
    scale = float(np.abs(a).sum())
    if scale == 0.0:
        return 0.0 if err == 0.0 else float("nan")
    return err / scale


class SeasonalNaiveForecaster:
    """The value one season ago (a day of minutes by default), repeated season after season for
    horizons longer than one season. With less than a season of history: the mean of the last
    hour (zeros with no history at all). Stateless."""

    def __init__(self, season: int = 1440) -> None:
        if season < 1:
            raise ValueError(f"season must be >= 1, got {season}")
        self.season = season

    def forecast(self, history: np.ndarray, horizon: int) -> np.ndarray:
        h = np.asarray(history, dtype=float)
        t = len(h)
        if t < self.season:
            level = h[-60:].mean() if t else 0.0
            return np.full(horizon, max(level, 0.0))
        idx = t - self.season + np.arange(horizon) % self.season
        return np.maximum(h[idx], 0.0)


class ArimaForecaster:
    """ARIMA(``order``) fitted by maximum likelihood on the last ``window`` minutes of the history.

    The parameters are re-estimated once ``refit_every`` minutes of history have arrived since the
    last fit (warm-started from the previous parameters, which shortens the fit); between
    refits the fitted model is only extended with the new observations (Kalman filtering with
    fixed parameters, milliseconds). The series is divided by its window mean for the fit, which
    keeps the optimizer well conditioned for token counts in the millions.

    Falls back to ``SeasonalNaiveForecaster(season)`` when the history is shorter than
    ``min_history`` or the fit fails (an exception or a non-finite forecast); a failed fit is
    retried at the next scheduled refit, not on every call. Counters: ``fits`` (estimations run),
    ``unconverged`` (fits whose optimizer did not converge; their parameters are still used),
    ``fallbacks`` (forecasts served by the fallback). Statsmodels' convergence and starting-value
    warnings are silenced inside the fit only.
    """

    def __init__(self, order: Tuple[int, int, int] = (3, 1, 2), refit_every: int = 60, window: int = 1440,
                 min_history: int = 120, season: int = 1440) -> None:
        if refit_every < 1 or window < 1 or min_history < 1:
            raise ValueError("refit_every, window and min_history must be >= 1")
        self.order = tuple(order)
        self.refit_every = refit_every
        self.window = window
        self.min_history = min_history
        self.fallback = SeasonalNaiveForecaster(season)
        self.fits = 0
        self.unconverged = 0
        self.fallbacks = 0
        self._results = None  # fitted (and extended) statsmodels results, or None
        self._params: Optional[np.ndarray] = None  # last estimated parameters, to warm-start refits
        self._scale = 1.0
        self._fit_at = -1  # history length at the last fit attempt
        self._seen = 0  # history length the results have filtered up to
        self._last = 0.0  # history[_seen - 1], to notice a different series

    def forecast(self, history: np.ndarray, horizon: int) -> np.ndarray:
        h = np.asarray(history, dtype=float)
        t = len(h)
        if t < self.min_history:
            self.fallbacks += 1
            return self.fallback.forecast(h, horizon)
        fresh = self._fit_at < 0 or t < self._seen or h[self._seen - 1] != self._last
        if fresh or t - self._fit_at >= self.refit_every:
            self._fit(h)
        elif self._results is not None and t > self._seen:
            self._extend(h)
        if self._results is not None:
            with np.errstate(all="ignore"):
                fc = np.asarray(self._results.forecast(horizon), dtype=float) * self._scale
            if np.all(np.isfinite(fc)):
                return np.maximum(fc, 0.0)
        self.fallbacks += 1
        return self.fallback.forecast(h, horizon)

    def _fit(self, h: np.ndarray) -> None:
        """Estimate the parameters on the last ``window`` minutes of ``h``."""
        t = len(h)
        x = h[max(0, t - self.window):]
        mean = float(np.abs(x).mean())
        self._scale = mean if mean > 0 else 1.0
        self._fit_at = self._seen = t
        self._last = h[-1]
        self.fits += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                warnings.simplefilter("ignore", EstimationWarning)
                self._results = ARIMA(x / self._scale, order=self.order).fit(start_params=self._params)
        except (ValueError, np.linalg.LinAlgError):
            self._results = None
            return
        self._params = self._results.params
        if not self._results.mle_retvals.get("converged", True):
            self.unconverged += 1

    def _extend(self, h: np.ndarray) -> None:
        """Filter the minutes that arrived since the last call, parameters fixed."""
        self._results = self._results.extend(h[self._seen:] / self._scale)
        self._seen = len(h)
        self._last = h[-1]


FORECASTERS = ("arima", "seasonal_naive")


class EndpointForecasters:
    """One forecaster per endpoint for per-minute series shaped (minutes, regions, models):
    ``arima`` (``ArimaForecaster(order, refit_every)``) or ``seasonal_naive``. Each keeps the
    state of its own series across the calls of an episode."""

    def __init__(self, kind: str, order: Tuple[int, int, int] = (3, 1, 2), refit_every: int = 60) -> None:
        if kind not in FORECASTERS:
            raise ValueError(f"forecaster must be one of {list(FORECASTERS)}, got {kind!r}")
        self.kind = kind
        self.order = tuple(order)
        self.refit_every = refit_every
        self.models: Dict[Tuple[int, int], object] = {}

    def forecast(self, history: np.ndarray, horizon: int) -> np.ndarray:
        """``horizon`` non-negative values per endpoint following ``history``, (horizon, R, M)."""
        out = np.zeros((horizon,) + history.shape[1:])
        for r, m in np.ndindex(history.shape[1:]):
            model = self.models.get((r, m))
            if model is None:
                model = (ArimaForecaster(self.order, self.refit_every) if self.kind == "arima"
                         else SeasonalNaiveForecaster())
                self.models[(r, m)] = model
            out[:, r, m] = model.forecast(history[:, r, m], horizon)
        return out


# -- SageServe's precomputed long-term inputs ------------------------------------------------------
# The original's long-term arbiters read one file pair per (model, region index): the ARIMA
# predictions of prod prompt tokens per minute, and the dev requests (``global_arbiter.py``,
# ``MilpGlobalArbiter.load_predicted_traces``).
PROD_FILE = "final_{model}_prod_1minute_region{region}_arima.csv"
DEV_FILE = "final_{model}_dev_region{region}_exact.csv"
FORECAST_TAIL_MINUTES = 180  # the original's files extend 180 minutes past the trace


@dataclass(frozen=True)
class SageServeForecasts:
    """SageServe's long-term inputs for one trace, arrays indexed like the config (region, model).

    ``prod_tokens_per_min`` (minutes, R, M): predicted prompt tokens of the minute starting at
    ``60 * index`` s (the files' ``Time``); ``dev_arrival_s`` and ``dev_prompt_tokens``: per
    endpoint, the dev requests whose first region it is. These are in-sample predictions made
    with the whole trace, so they know its future, as the original's did.
    """

    prod_tokens_per_min: np.ndarray
    dev_arrival_s: Dict[Tuple[int, int], np.ndarray]
    dev_prompt_tokens: Dict[Tuple[int, int], np.ndarray]

    @classmethod
    def read(cls, directory: str | Path, n_regions: int, model_names: Sequence[str]) -> "SageServeForecasts":
        """Read ``directory``'s files (region ``r`` is the config's ``r``-th region, as in the
        trace's ``regions`` digits); ValueError naming the file, row and column otherwise."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ValueError(f"arbiter.forecasts: {str(directory)!r} is not a directory")
        series, dev_at, dev_tokens = {}, {}, {}
        for r in range(n_regions):
            for m, model in enumerate(model_names):
                prod = _read_columns(directory / PROD_FILE.format(model=model, region=r), ("Time", "Predicted"))
                time_s, predicted = prod["Time"], prod["Predicted"]
                bad = np.flatnonzero((time_s % 60 != 0) | (time_s < 0) | (predicted < 0))
                if len(bad):
                    raise ValueError(f"{directory / PROD_FILE.format(model=model, region=r)}: row {bad[0] + 2}: "
                                     f"Time must be a non-negative multiple of 60 and Predicted >= 0, "
                                     f"got Time={time_s[bad[0]]!r}, Predicted={predicted[bad[0]]!r}")
                series[r, m] = (time_s // 60).astype(np.int64), predicted
                dev = _read_columns(directory / DEV_FILE.format(model=model, region=r),
                                    ("arrival_timestamp", "prompt_size"))
                dev_at[r, m], dev_tokens[r, m] = dev["arrival_timestamp"], dev["prompt_size"]
        minutes = 1 + max((int(idx.max()) for idx, _ in series.values() if len(idx)), default=0)
        tokens = np.zeros((minutes, n_regions, len(model_names)))
        for (r, m), (idx, predicted) in series.items():
            tokens[idx, r, m] = predicted
        return cls(tokens, dev_at, dev_tokens)

    def window_max(self, start_s: float, end_s: float) -> np.ndarray:
        """Largest predicted tokens per minute among the minutes whose ``Time`` lies in
        [start_s, end_s], per endpoint (0 where none does), (R, M)."""
        first = max(0, int(np.ceil(start_s / 60.0)))
        last = min(len(self.prod_tokens_per_min) - 1, int(np.floor(end_s / 60.0)))
        if last < first:
            return np.zeros(self.prod_tokens_per_min.shape[1:])
        return self.prod_tokens_per_min[first:last + 1].max(axis=0)

    def dev_max_prompt(self, start_s: float, end_s: float) -> np.ndarray:
        """Largest dev prompt arriving in [start_s, end_s], per endpoint (0 where none), (R, M)."""
        out = np.zeros(self.prod_tokens_per_min.shape[1:])
        for (r, m), at in self.dev_arrival_s.items():
            inside = (at >= start_s) & (at <= end_s)
            if inside.any():
                out[r, m] = self.dev_prompt_tokens[r, m][inside].max()
        return out


def _read_columns(path: Path, columns: Sequence[str]) -> Dict[str, np.ndarray]:
    """Numeric columns of a CSV file; ValueError naming the file, and the row and column of a
    value that is not a finite number."""
    import pandas as pd

    if not path.is_file():
        raise ValueError(f"arbiter.forecasts: missing file {str(path)!r}")
    frame = pd.read_csv(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; has {list(frame.columns)}")
    out = {}
    for c in columns:
        values = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise ValueError(f"{path}: row {bad[0] + 2}, column {c!r}: not a finite number: {frame[c].iloc[bad[0]]!r}")
        out[c] = values
    return out


def write_sageserve_forecasts(rows, directory: str | Path, n_regions: int) -> None:
    """Write SageServe's long-term inputs for a trace in its layout (``rows``: the trace as a
    pandas DataFrame of its 15 columns), as the original's notebook made them: per (model,
    first region), the prod prompt tokens per minute, ARIMA(3, 1, 2) fitted on the whole series,
    its in-sample one-step predictions (the first minute's actual value at minute 0) followed by
    ``FORECAST_TAIL_MINUTES`` of forecast; and the dev rows as they are."""
    import pandas as pd

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    first = rows["regions"].astype(str).str.zfill(3).str[0].astype(int)
    minutes = int(rows["arrival_timestamp"].max() // 60) + 1
    for model in sorted(rows["model_type"].unique()):
        for r in range(n_regions):
            mine = rows[(rows["model_type"] == model) & (first == r)]
            prod = mine[mine["workload_type"] == "prod"]
            series = np.bincount((prod["arrival_timestamp"] // 60).astype(np.int64),
                                 weights=prod["prompt_size"], minlength=minutes)
            predicted = _in_sample_arima(series, minutes - 1 + FORECAST_TAIL_MINUTES)
            predicted[0] = series[0]
            pd.DataFrame({"Predicted": predicted, "Time": 60 * np.arange(len(predicted))}).to_csv(
                directory / PROD_FILE.format(model=model, region=r))
            mine[mine["workload_type"] == "dev"].to_csv(directory / DEV_FILE.format(model=model, region=r))


def _in_sample_arima(series: np.ndarray, end: int) -> np.ndarray:
    """ARIMA(3, 1, 2) fitted on ``series``, its predictions for minutes 0 to ``end``. Where the
    fit on the raw token counts fails numerically (statsmodels' stationary initialization on
    counts in the millions), the series divided by its mean is fitted instead: the same model in
    exact arithmetic, better conditioned."""
    def fit_predict(x: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(ARIMA(x, order=(3, 1, 2)).fit().predict(start=0, end=end), dtype=float)

    try:
        return fit_predict(series)
    except (ValueError, np.linalg.LinAlgError):
        scale = float(np.abs(series).mean()) or 1.0
        return fit_predict(series / scale) * scale
