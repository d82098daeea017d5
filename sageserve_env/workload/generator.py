"""Seeded synthetic workload: multi-region days and weeks in the SageServe regime.

Time ``t = 0`` is midnight, local time, of the first configured region (the reference region)
on weekday ``start_day`` (0 = Monday). Each region's arrival rate follows a diurnal curve in
its own local time (``RegionConfig.utc_offset_h``), a smooth business-hours bump peaking at
``PEAK_HOUR`` local with peak / trough ratio ``workload.peak_to_trough``, multiplied by
``workload.weekend_factor`` on the region's local Saturdays and Sundays. A weekday carries
``workload.requests_per_day`` requests summed over regions, split by ``region_weights``.

Arrivals are a non-homogeneous Poisson process with rates constant over each minute. A share
``iw_share`` of requests (by count) is interactive (IW, one request per arrival, SLA
``slo.iw_ttft_s``); the rest arrives as NIW batch jobs: job arrivals are Poisson at the same
diurnal shape, a job has a lognormal number of requests with mean ``niw_job_size_mean``, one
model, one home region, one ``batch_id``, arrival times spread uniformly over ``JOB_SPREAD_S``
seconds, and deadline ``niw.deadline_s``. With ``burst_factor`` k > 1 every arrival in the
first minute of each hour (of t) is present k times (the original and k - 1 identical copies,
like SageServe's burst traces). Prompt and output tokens are drawn jointly from the mixture of
log-normals in ``token_sizes.yaml`` (fitted on the Azure conversation trace by
``scripts/fit_token_sizes.py``), rounded and clipped to its ``clip`` range [1, 32768].

That is the v0 process. The v1 process of the benchmark tasks (``v1_rates``,
``generate_with_history``) adds day-to-day variation, a per-endpoint log-rate AR(1) calibrated on
the Azure conversation trace's burstiness, flash crowds, growth and generated history days;
``docs/workload.md`` gives its knobs, the calibration and how hard each task is to forecast.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import numpy as np
import yaml

from sageserve_env.config import SimConfig
from sageserve_env.workload.deployment import assign, assign_history
from sageserve_env.workload.readers import load_trace, model_popularity, nearest_first_orders, region_shares
from sageserve_env.workload.workload import IW, NIW, Workload, WorkloadError

TOKEN_SIZES = Path(__file__).resolve().parent / "token_sizes.yaml"
BIN_S = 60.0  # rates are piecewise constant over bins of this length
PEAK_HOUR = 13.0  # local hour of the diurnal peak (early afternoon)
PEAK_KAPPA = 2.0  # concentration of the daily von Mises bump: ~10 busy hours around the peak
JOB_SIZE_SIGMA = 0.5  # lognormal shape of NIW job sizes (requests per job)
JOB_SPREAD_S = 60.0  # a job's requests arrive uniformly within this many seconds of its start
WEEKEND = (5, 6)  # Saturday, Sunday


def diurnal(local_hour: np.ndarray, peak_to_trough: float) -> np.ndarray:
    """Relative rate in [1 / peak_to_trough, 1], peaking at ``PEAK_HOUR`` local time.

    A von Mises bump exp(kappa (cos(2 pi (h - peak) / 24) - 1)) rescaled to [0, 1], then lifted so
    that the trough (12 h from the peak) is 1 / peak_to_trough of the peak.
    """
    bump = np.exp(PEAK_KAPPA * (np.cos(2 * np.pi * (local_hour - PEAK_HOUR) / 24.0) - 1.0))
    floor = np.exp(-2.0 * PEAK_KAPPA)
    g = (bump - floor) / (1.0 - floor)
    return (1.0 + (peak_to_trough - 1.0) * g) / peak_to_trough


def expected_counts(cfg: SimConfig, days: float, start_day: int):
    """(bin start times, bin widths, expected requests per region and bin) over ``days``."""
    w = cfg.workload
    horizon = days * 86400.0
    starts = np.arange(0.0, horizon, BIN_S)
    widths = np.minimum(BIN_S, horizon - starts)
    mid = starts + widths / 2
    ref = cfg.regions[0].utc_offset_h
    day_mean = diurnal((np.arange(1440) + 0.5) / 60.0, w.peak_to_trough).mean()
    shares = region_shares(cfg)
    counts = np.empty((len(cfg.regions), len(starts)))
    for r, region in enumerate(cfg.regions):
        local = mid + (region.utc_offset_h - ref) * 3600.0  # seconds since the reference midnight, local
        weekday = (start_day + np.floor(local / 86400.0).astype(int)) % 7
        scale = np.where(np.isin(weekday, WEEKEND), w.weekend_factor, 1.0)
        shape = diurnal((local % 86400.0) / 3600.0, w.peak_to_trough) / day_mean  # mean 1 over a day
        counts[r] = w.requests_per_day * shares[r] / 86400.0 * shape * scale * widths
    return starts, widths, counts


@functools.lru_cache(maxsize=8)
def _mixture(path: Path, mtime_ns: int):
    """(weights, means, Cholesky factors, clip range) of the mixture in ``path`` (parsed once per
    version of the file: YAML parsing would dominate the reset of a small env)."""
    spec = yaml.safe_load(path.read_text())
    comps = spec["components"]
    weight = np.array([c["weight"] for c in comps], dtype=float)
    mean = np.array([c["mean_ln"] for c in comps], dtype=float)
    chol = np.linalg.cholesky(np.array([c["cov_ln"] for c in comps], dtype=float))
    for a in (weight, mean, chol):
        a.flags.writeable = False
    return weight, mean, chol, tuple(spec["clip"])


def sample_tokens(rng: np.random.Generator, n: int, path: Path = TOKEN_SIZES):
    """``n`` (prompt, output) token pairs from the fitted mixture, as int32 arrays."""
    weight, mean, chol, (lo, hi) = _mixture(Path(path), Path(path).stat().st_mtime_ns)
    k = rng.choice(len(weight), size=n, p=weight / weight.sum())
    z = rng.standard_normal((2, n))
    ln_prompt = mean[k, 0] + chol[k, 0, 0] * z[0]
    ln_output = mean[k, 1] + chol[k, 1, 0] * z[0] + chol[k, 1, 1] * z[1]
    return (np.clip(np.rint(np.exp(ln_prompt)), lo, hi).astype(np.int32),
            np.clip(np.rint(np.exp(ln_output)), lo, hi).astype(np.int32))


def _seed_info(rng: np.random.Generator):
    seq = getattr(rng.bit_generator, "seed_seq", None)
    return {"entropy": getattr(seq, "entropy", None), "spawn_key": list(getattr(seq, "spawn_key", ()))}


def generate(cfg: SimConfig, rng: np.random.Generator, days: Optional[float] = None,
             start_day: Optional[int] = None) -> Workload:
    """A synthetic workload of ``days`` (default ``cfg.workload.days``) starting on weekday
    ``start_day`` (default ``cfg.workload.start_day``); all randomness from ``rng``. A config
    that sets any knob of the v1 process is generated by ``generate_with_history`` (its history
    is dropped)."""
    if uses_v1_process(cfg):
        return generate_with_history(cfg, rng, days, start_day)[0]
    w = cfg.workload
    days, start_day, horizon = _check_span(cfg, days, start_day)
    starts, widths, counts = expected_counts(cfg, days, start_day)
    n_regions, n_bins = counts.shape
    popularity = model_popularity(cfg)

    # Interactive: one request per arrival.
    iw_n = rng.poisson(w.iw_share * counts).ravel()
    iw_bin = np.repeat(np.arange(n_regions * n_bins), iw_n)
    iw_t = starts[iw_bin % n_bins] + rng.random(len(iw_bin)) * widths[iw_bin % n_bins]
    iw_region = iw_bin // n_bins
    iw_model = rng.choice(len(popularity), size=len(iw_bin), p=popularity)
    niw = _niw_jobs(rng, (1.0 - w.iw_share) * counts / w.niw_job_size_mean, starts, widths, popularity,
                    w.niw_job_size_mean, horizon)
    return _assemble(cfg, rng, (iw_t, iw_region, iw_model), niw, days, start_day)


def _check_span(cfg: SimConfig, days: Optional[float], start_day: Optional[int]):
    w = cfg.workload
    days = float(w.days if days is None else days)
    start_day = int(w.start_day if start_day is None else start_day)
    horizon = days * 86400.0
    if not horizon > 0 or not w.niw_job_size_mean >= 1:
        raise WorkloadError(f"generate: need days > 0 and workload.niw_job_size_mean >= 1, got {days!r}, "
                            f"{w.niw_job_size_mean!r}")
    return days, start_day, horizon


def _niw_jobs(rng, job_rate, starts, widths, popularity, mean, horizon):
    """NIW batch jobs: Poisson job arrivals at ``job_rate`` (regions, bins) expected jobs per bin,
    lognormal sizes of mean ``mean``. Returns (times, regions, models, batch ids, jobs)."""
    n_regions, n_bins = job_rate.shape
    job_n = rng.poisson(job_rate).ravel()
    job_bin = np.repeat(np.arange(n_regions * n_bins), job_n)
    job_t = starts[job_bin % n_bins] + rng.random(len(job_bin)) * widths[job_bin % n_bins]
    by_time = np.argsort(job_t, kind="stable")  # batch ids count jobs in arrival order
    job_t, job_bin = job_t[by_time], job_bin[by_time]
    job_size = np.maximum(1, np.rint(rng.lognormal(np.log(mean) - JOB_SIZE_SIGMA ** 2 / 2, JOB_SIZE_SIGMA,
                                                   len(job_bin)))).astype(np.int64)
    job_model = rng.choice(len(popularity), size=len(job_bin), p=popularity)
    job = np.repeat(np.arange(len(job_bin)), job_size)
    spread = np.minimum(JOB_SPREAD_S, horizon - job_t)
    niw_t = job_t[job] + rng.random(len(job)) * spread[job]
    return niw_t, job_bin[job] // n_bins, job_model[job], job, len(job_bin)


def _assemble(cfg, rng, iw, niw, days, start_day, extra_meta=None) -> Workload:
    """The workload from IW (times, regions, models) and NIW jobs: burst copies, token sizes,
    SLAs, arrival order."""
    w = cfg.workload
    iw_t, iw_region, iw_model = iw
    niw_t, niw_region, niw_model, job, n_jobs = niw
    arrival = np.concatenate([iw_t, niw_t])
    region = np.concatenate([iw_region, niw_region]).astype(np.int16)
    model = np.concatenate([iw_model, niw_model]).astype(np.int16)
    tier = np.concatenate([np.full(len(iw_t), IW), np.full(len(job), NIW)]).astype(np.int8)
    batch = np.concatenate([np.full(len(iw_t), -1), job])
    if w.burst_factor > 1:
        burst = np.flatnonzero(arrival % 3600.0 < 60.0)
        idx = np.concatenate([np.arange(len(arrival)), np.repeat(burst, w.burst_factor - 1)])
        arrival, region, model, tier, batch = arrival[idx], region[idx], model[idx], tier[idx], batch[idx]
    prompt, output = sample_tokens(rng, len(arrival))
    order = np.argsort(arrival, kind="stable")
    sla = np.where(tier[order] == IW, cfg.slo.iw_ttft_s, cfg.niw.deadline_s)
    meta = {"generator": "synthetic", "scenario": cfg.name, "days": days, "start_day": start_day,
            "seed": _seed_info(rng), "requests_per_day": w.requests_per_day, "niw_jobs": n_jobs,
            "burst_factor": w.burst_factor, "t0": f"midnight local time in {cfg.regions[0].name}"}
    meta.update(extra_meta or {})
    workload = Workload(tuple(cfg.region_names), tuple(cfg.workload_models), arrival[order], region[order],
                        region[order].copy(), model[order], tier[order], prompt, output, sla, batch[order],
                        priority_orders=nearest_first_orders([r.utc_offset_h for r in cfg.regions]),
                        source=f"generator:{cfg.name}", meta=meta)
    return assign(cfg, workload)


# -- the v1 process ------------------------------------------------------------------------
V1_KNOBS = ("day_level_sigma", "day_peak_sigma_h", "day_swing_sigma", "rate_sigma", "growth_per_day",
            "flash_per_day", "history_days")
TOKEN_MOMENT_SAMPLE = 100_000  # token draws that estimate the prompt mean and variance of history minutes


def uses_v1_process(cfg: SimConfig) -> bool:
    """True when the config sets a knob of the v1 process (all off in the v0 presets)."""
    return any(getattr(cfg.workload, k) != 0 for k in V1_KNOBS)


def _smooth_daily(rng, sigma, n_regions, n_days, t_days):
    """Per-region daily draws N(0, sigma) at each local noon, linearly interpolated over
    ``t_days`` (regions, bins: local time in days, may start below 0): no jump at midnight."""
    z = sigma * rng.standard_normal((n_regions, n_days + 2)) if sigma > 0 else np.zeros((n_regions, n_days + 2))
    noons = np.arange(-1, n_days + 1) + 0.5
    return np.stack([np.interp(t_days[r], noons, z[r]) for r in range(n_regions)])


def v1_rates(cfg: SimConfig, rng: np.random.Generator, days: float, start_day: int):
    """Expected counts per minute bin of the v1 process over [-history_days, days) days.

    Returns (bin starts in episode time, widths, IW requests (regions, models, bins), NIW jobs
    (regions, bins), flash crowds as (start s, duration s, region, model or -1)). The volume
    is the v0 diurnal weekday/weekend curve, with per-(region, day) volume, peak hour and swing
    drawn around it, times ``(1 + growth_per_day) ** (t / 1 day)``; each endpoint's IW rate is
    multiplied by ``exp(x - rate_sigma**2 / 2)`` with ``x`` a stationary AR(1) over minutes
    (sd ``rate_sigma``, lag-one correlation ``exp(-60 / rate_tau_s)``) and by ``flash_factor``
    while a flash crowd covers it."""
    w = cfg.workload
    hist = int(w.history_days)
    total = hist + days
    first_day = (start_day - hist) % 7
    span = total * 86400.0
    starts = np.arange(0.0, span, BIN_S)
    widths = np.minimum(BIN_S, span - starts)
    mid = starts + widths / 2
    ref = cfg.regions[0].utc_offset_h
    n_regions, n_models, n_bins = len(cfg.regions), len(cfg.workload_models), len(starts)
    local = np.stack([mid + (r.utc_offset_h - ref) * 3600.0 for r in cfg.regions])  # (R, bins)
    n_days = int(np.ceil(total)) + 1
    level = _smooth_daily(rng, w.day_level_sigma, n_regions, n_days, local / 86400.0)
    peak = _smooth_daily(rng, w.day_peak_sigma_h, n_regions, n_days, local / 86400.0)
    swing = _smooth_daily(rng, w.day_swing_sigma, n_regions, n_days, local / 86400.0)
    hours = (np.arange(1440) + 0.5) / 60.0
    g_mean = diurnal(hours, 2.0).mean() * 2.0 - 1.0  # mean of the [0, 1] bump over a day
    ptt = 1.0 + (w.peak_to_trough - 1.0) * np.exp(swing)
    hour = (local % 86400.0) / 3600.0
    bump = np.exp(PEAK_KAPPA * (np.cos(2 * np.pi * (hour - PEAK_HOUR - peak) / 24.0) - 1.0))
    floor = np.exp(-2.0 * PEAK_KAPPA)
    g = (bump - floor) / (1.0 - floor)
    shape = (1.0 + (ptt - 1.0) * g) / (1.0 + (ptt - 1.0) * g_mean)  # mean 1 over a day
    weekday = (first_day + np.floor(local / 86400.0).astype(int)) % 7
    weekly = np.where(np.isin(weekday, WEEKEND), w.weekend_factor, 1.0)
    growth = (1.0 + w.growth_per_day) ** ((mid - hist * 86400.0) / 86400.0)
    volume = (w.requests_per_day * region_shares(cfg)[:, None] / 86400.0 * widths * shape * weekly * growth
              * np.exp(level - w.day_level_sigma ** 2 / 2))
    iw = w.iw_share * volume[:, None, :] * model_popularity(cfg)[None, :, None]
    if w.rate_sigma > 0:
        from scipy.signal import lfilter

        phi = float(np.exp(-BIN_S / w.rate_tau_s))
        innov = rng.standard_normal((n_regions, n_models, n_bins)) * w.rate_sigma
        innov[..., 1:] *= np.sqrt(1.0 - phi ** 2)
        x = lfilter([1.0], [1.0, -phi], innov, axis=-1)
        iw = iw * np.exp(x - w.rate_sigma ** 2 / 2)
    flashes = []
    if w.flash_per_day > 0:
        n = rng.poisson(w.flash_per_day * total)
        t0 = rng.random(n) * span
        fr = rng.integers(n_regions, size=n)
        fm = rng.integers(n_models, size=n) if w.flash_scope == "endpoint" else np.full(n, -1)
        for s, r, m in zip(t0, fr, fm):
            overlap = np.clip(np.minimum(starts + widths, s + w.flash_duration_s) - np.maximum(starts, s), 0, None)
            lift = 1.0 + (w.flash_factor - 1.0) * overlap / widths
            hit = slice(None) if m < 0 else m
            iw[r, hit] *= lift
            flashes.append((float(s - hist * 86400.0), w.flash_duration_s, int(r), int(m)))
    niw_jobs = (1.0 - w.iw_share) * volume / w.niw_job_size_mean
    return starts - hist * 86400.0, widths, iw, niw_jobs, flashes


def generate_with_history(cfg: SimConfig, rng: np.random.Generator, days: Optional[float] = None,
                          start_day: Optional[int] = None):
    """(workload, history): a workload of the v1 process over [0, days) days and the IW prompt
    tokens per minute of its ``history_days`` preceding days, (minutes, regions, models), of
    the same process (the per-minute sums of the history are drawn from their Poisson counts
    and the normal approximation of a sum of token draws, not request by request)."""
    w = cfg.workload
    days, start_day, horizon = _check_span(cfg, days, start_day)
    starts, widths, iw_rate, job_rate, flashes = v1_rates(cfg, rng, days, start_day)
    ep = starts >= -1e-9
    n_regions, n_models = iw_rate.shape[:2]
    history = np.zeros((int(np.sum(~ep)), n_regions, n_models))
    if history.shape[0]:
        n = rng.poisson(iw_rate[..., ~ep]).transpose(2, 0, 1).astype(float)
        prompt, _ = sample_tokens(rng, TOKEN_MOMENT_SAMPLE)
        mu, var = float(prompt.mean()), float(prompt.var())
        history = np.maximum(n * mu + np.sqrt(n * var) * rng.standard_normal(n.shape), 0.0)
    starts, widths, iw_rate, job_rate = starts[ep], widths[ep], iw_rate[..., ep], job_rate[:, ep]
    n_bins = len(starts)
    iw_n = rng.poisson(iw_rate).ravel()  # (region, model, bin) order
    cell = np.repeat(np.arange(iw_n.size), iw_n)
    b = cell % n_bins
    iw_t = starts[b] + rng.random(len(cell)) * widths[b]
    iw_region, iw_model = cell // (n_bins * n_models), (cell // n_bins) % n_models
    niw = _niw_jobs(rng, job_rate, starts, widths, model_popularity(cfg), w.niw_job_size_mean, horizon)
    extra = {"process": "v1", "history_days": int(w.history_days), "flash_crowds": flashes}
    return (_assemble(cfg, rng, (iw_t, iw_region, iw_model), niw, days, start_day, extra),
            assign_history(cfg, history))


def load_workload(cfg: SimConfig, rng: np.random.Generator, horizon_s: Optional[float] = None) -> Workload:
    """The workload the config asks for: a generated one (``workload.source=generator``) or the
    trace ``workload.trace`` read with ``load_trace`` (``load_config`` made a relative path
    absolute, from the working directory).

    With ``horizon_s`` only the requests arriving in [0, horizon_s) are kept (a generated one
    covers exactly that span); the trace rows left out are counted in
    ``meta['rows_outside_horizon']`` (of ``meta['rows_read']``) so callers can report them."""
    if cfg.workload.source == "generator":
        return generate(cfg, rng, days=None if horizon_s is None else horizon_s / 86400.0)
    whole = load_trace(cfg.workload.trace, cfg.workload.trace_format, cfg)
    if horizon_s is None:
        return whole
    window = whole.slice_time(0.0, horizon_s)
    window.meta.update(rows_read=len(whole), rows_outside_horizon=len(whole) - len(window))
    return window


def check_not_empty(workload: Workload, horizon_s: float, option: str) -> None:
    """Raise WorkloadError when ``workload`` has no request: a run over nothing measures nothing.
    The message names ``option``, the explicit way to run it anyway."""
    if len(workload):
        return
    outside = workload.meta.get("rows_outside_horizon")
    why = f"all {outside} trace rows arrive at or after {horizon_s:g} s" if outside else "nothing arrives"
    raise WorkloadError(f"0 requests in [0, {horizon_s:g}) s ({why}); pass {option} to run it anyway")
