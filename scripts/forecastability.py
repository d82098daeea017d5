"""How hard each task is to forecast: hourly MAPE of the policies' forecasters.

    python scripts/forecastability.py [Day-v1 ...] [--seed N] [--hours H]

For the task's workload of seed N (default: its first test seed) every hour boundary of the
episode forecasts the coming hour of each endpoint's IW prompt tokens per minute from the
history the long-term policies see (the preceding days' minutes, then the episode's so far),
with the seasonal-naive and ARIMA forecasters of ``sageserve_env.workload.forecast`` (ARIMA as
the policies configure it: order (3, 1, 2), refit every 180 minutes). The hourly MAPE is the
mean over (hour, endpoint) of |forecast - actual| / actual of the hour's total tokens; the peak
MAPE compares the hour's highest 5-minute mean (what the planner sizes for). ``SageServe-v0``
is the v0 paper day (no history: the first hours fall back to the last hour's mean).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import sageserve_env  # noqa: E402,F401  (registers the IDs)
from sageserve_env.env.view import demand_per_minute  # noqa: E402
from sageserve_env.tasks import task, tasks  # noqa: E402
from sageserve_env.workload.forecast import EndpointForecasters  # noqa: E402


def peak5(x: np.ndarray) -> np.ndarray:
    c = np.cumsum(np.concatenate([np.zeros((1,) + x.shape[1:]), x]), axis=0)
    return ((c[5:] - c[:-5]) / 5).max(axis=0)


def measure(env_id: str, seed: int, hours: int | None):
    env = gym.make(f"sageserve_env/{env_id}").unwrapped
    w, past = env.draw_episode(seed)  # the workload reset(seed=seed) replays, and its history days
    R, M = env.n_regions, env.n_models
    minutes = int(np.ceil(env.horizon / 60))
    cfg = env.sim_config
    actual = demand_per_minute(w, w.indexed(cfg.region_names, cfg.model_names), minutes, R, M)
    past = np.zeros((0, R, M)) if past is None else past
    n_hours = minutes // 60 if hours is None else min(hours, minutes // 60)
    out = {}
    for kind in ("seasonal_naive", "arima"):
        fc = EndpointForecasters(kind, (3, 1, 2), 180)
        errs, peak_errs = [], []
        for h in range(n_hours):
            hist = np.concatenate([past, actual[: 60 * h]])
            f = fc.forecast(hist, 60)
            a = actual[60 * h: 60 * h + 60]
            tot_a, tot_f = a.sum(0), f.sum(0)
            ok = tot_a > 0
            errs.append(np.abs(tot_f - tot_a)[ok] / tot_a[ok])
            pa, pf = peak5(a), peak5(f)
            peak_errs.append(np.abs(pf - pa)[ok] / pa[ok])
        out[kind] = (float(np.concatenate(errs).mean()), float(np.concatenate(peak_errs).mean()))
    env.close()
    return out, n_hours, len(past)


def main(argv) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("tasks", nargs="*", default=list(tasks()))
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--hours", type=int, default=None, help="score only the first H hours")
    a = ap.parse_args(argv)
    print("| task | seed | hours scored | history minutes | seasonal-naive hourly MAPE | ARIMA hourly MAPE "
          "| seasonal-naive peak-5-min MAPE | ARIMA peak-5-min MAPE |")
    print("|---|---|---|---|---|---|---|---|")
    for env_id in a.tasks:
        seed = a.seed if a.seed is not None else (1001 if env_id.endswith("-v0") else task(env_id).seeds.test[0])
        res, n_hours, n_hist = measure(env_id, seed, a.hours)
        sn, ar = res["seasonal_naive"], res["arima"]
        print(f"| {env_id} | {seed} | {n_hours} | {n_hist} | {sn[0]:.3f} | {ar[0]:.3f} | {sn[1]:.3f} | {ar[1]:.3f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
