"""PNG plots of a run (instances against load, latency CDFs, GPU-hours by state) and of an
evaluation matrix (``plot_matrix``).

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``) and rendered by
Agg when saved, so nothing here touches pyplot's global state or the session's backend.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Dict

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sageserve_env.sim.fleet import STATE_NAMES
from sageserve_env.workload.workload import IW, NIW

if TYPE_CHECKING:
    import pandas as pd

    from sageserve_env.sim.simulator import Simulator

CDF_POINTS = 1000  # quantiles drawn per latency CDF (enough for the eye, cheap for 1e6 requests)
TICKS = 3  # at most this many intervals between major ticks on the axes of the per-endpoint grid


def _save(fig: Figure, path: Path, tight: bool = True) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight" if tight else None)
    return path


def iw_load_per_minute(sim: "Simulator", rec: Dict[str, np.ndarray]) -> np.ndarray:
    """IW requests arriving per endpoint (home region, model) and simulated minute, shape
    (endpoints, minutes): one ``bincount`` over the records, so a plot of any length reads
    them once (the last minute also holds arrivals at ``now``)."""
    n_m = len(sim.model_names)
    n_e, n_minutes = len(sim.region_names) * n_m, max(1, math.ceil(sim.now / 60))
    iw = rec["tier"] == IW
    minute = np.minimum(rec["arrival_s"][iw] // 60, n_minutes - 1).astype(np.int64)
    endpoint = rec["region"][iw].astype(np.int64) * n_m + rec["model"][iw]
    return np.bincount(endpoint * n_minutes + minute, minlength=n_e * n_minutes).reshape(n_e, n_minutes)


def plot_instances_vs_load(sim: "Simulator", rec: Dict[str, np.ndarray], path: Path) -> Path:
    """Per endpoint (rows: regions, columns: models): billed instances (step, left axis) and the
    IW requests per minute arriving for it (home region), over simulated hours. The load is drawn
    on a linear scale from 0 whose top, the panel's peak minute, is written in the panel: the same
    values as a second axis would give, without one (a twin axis per panel doubled the time of
    this grid). NIW requests are left out: they arrive in job bursts and are fed
    opportunistically, not served on arrival."""
    n_r, n_m = len(sim.region_names), len(sim.model_names)
    # fixed margins: constrained layout and tight bounding boxes triple the time of this grid
    fig = Figure(figsize=(3.6 * n_m + 0.8, 2.4 * n_r + 0.6))
    fig.subplots_adjust(left=0.8 / fig.get_figwidth(), right=1 - 0.3 / fig.get_figwidth(), bottom=0.55 / fig.get_figheight(),
                        top=1 - 0.6 / fig.get_figheight(), wspace=0.3, hspace=0.35)
    axes = fig.subplots(n_r, n_m, squeeze=False, sharex=True)
    tl = np.asarray(sim.fleet.timeline, dtype=float).reshape(-1, 7)
    load = iw_load_per_minute(sim, rec)
    minutes = (np.arange(load.shape[1]) + 0.5) / 60
    for r, region in enumerate(sim.region_names):
        for m, model in enumerate(sim.model_names):
            ax = axes[r, m]
            rows = tl[(tl[:, 1] == r) & (tl[:, 2] == m)]
            times = np.r_[rows[:, 0], sim.now] / 3600
            billed = rows[:, 3:6].sum(axis=1)
            top = max(float(billed.max()), 1.0) * 1.15
            peak = int(load[r * n_m + m].max())
            ax.plot(minutes, load[r * n_m + m] * (top / max(peak, 1)), color="C1", lw=0.6, alpha=0.8)
            ax.step(times, np.r_[billed, billed[-1:]], where="post", color="C0", lw=1.2)
            ax.set_ylim(0, top)
            # a few ticks per axis: each tick is four artists, and the ticks are most of the drawing
            ax.yaxis.set_major_locator(MaxNLocator(TICKS, integer=True))
            ax.xaxis.set_major_locator(MaxNLocator(TICKS))
            ax.tick_params(axis="y", colors="C0", labelsize=7)
            ax.tick_params(axis="x", labelsize=7)
            ax.set_title(f"{region} / {model}", fontsize=9, loc="left")
            ax.set_title(f"IW: top = {peak:,} / min", fontsize=7, loc="right", color="C1")
            if m == 0:
                ax.set_ylabel("billed instances", color="C0", fontsize=8)
            if r == n_r - 1:
                ax.set_xlabel("simulated hours", fontsize=8)
    fig.suptitle("Billed instances (active + starting + draining, blue) against arriving IW requests per minute "
                 "(orange, 0 to the top written in each panel)")
    return _save(fig, path, tight=False)


def plot_latency_cdfs(sim: "Simulator", rec: Dict[str, np.ndarray], path: Path) -> Path:
    """CDFs of IW time to first token, IW end-to-end and NIW end-to-end latency (log x),
    with the IW TTFT SLO marked."""
    ttft = rec["first_token_s"] - rec["arrival_s"]
    e2e = rec["completion_s"] - rec["arrival_s"]
    iw, niw = rec["tier"] == IW, rec["tier"] == NIW
    fig = Figure(figsize=(7, 4.2))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.92)
    ax = fig.subplots()
    q = np.linspace(0, 1, CDF_POINTS + 1)
    for label, values in (("IW TTFT", ttft[iw]), ("IW end-to-end", e2e[iw]), ("NIW end-to-end", e2e[niw])):
        values = values[np.isfinite(values)]
        if len(values):
            ax.plot(np.maximum(np.quantile(values, q), 1e-3), q, label=f"{label} (n={len(values):,})")
    ax.axvline(sim.config.slo.iw_ttft_s, color="grey", ls="--", lw=0.8, label="IW TTFT SLO")
    ax.set_xscale("log")
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("fraction of served requests")
    ax.set_ylim(0, 1)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Latency CDFs")
    return _save(fig, path, tight=False)


def plot_gpu_hours(sim: "Simulator", path: Path) -> Path:
    """GPU-hours per region stacked by server state (active, starting, draining, spot, free)."""
    per_state = sim.gpu_seconds_by_state().sum(axis=1) / 3600.0  # region x state
    width = max(4.0, 1.6 * len(sim.region_names) + 2) + 1.2  # + the legend's column on the right
    fig = Figure(figsize=(width, 4))
    fig.subplots_adjust(left=0.8 / width, right=1 - 1.3 / width, bottom=0.1, top=0.9)
    ax = fig.subplots()
    x = np.arange(len(sim.region_names))
    bottom = np.zeros(len(x))
    for s, state in enumerate(STATE_NAMES):
        ax.bar(x, per_state[:, s], bottom=bottom, label=state, color=f"C{s}")
        bottom += per_state[:, s]
    ax.set_xticks(x, sim.region_names)
    ax.set_ylabel("GPU-hours")
    ax.set_title("GPU-hours by server state (billed: active + starting + draining)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path, tight=False)


def _compact(value: float) -> str:
    """A bar label: 4.31M, 35.2K, 712."""
    for scale, unit in ((1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.0f}"


def plot_deployments(results: Dict[str, Dict], path: Path) -> Path:
    """The unified-vs-siloed comparison (``silo.run_comparison``'s results): billed instances over
    the run per deployment (a siloed one also split into its prod and dev endpoints), and the
    utility of each tier per deployment (log scale, as the paper draws it)."""
    fig = Figure(figsize=(12, 4.2))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.13, top=0.88, wspace=0.25)
    line_ax, bar_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
    for i, (mode, r) in enumerate(results.items()):
        hours = r["times_s"] / 3600
        line_ax.step(hours, r["billed"], where="post", color=f"C{i}", lw=1.4, label=f"{mode}")
        if r["billed_dev"].any():
            line_ax.step(hours, r["billed_prod"], where="post", color=f"C{i}", lw=0.8, ls="--", label=f"{mode}: prod")
            line_ax.step(hours, r["billed_dev"], where="post", color=f"C{i}", lw=0.8, ls=":", label=f"{mode}: dev")
    line_ax.set_xlabel("simulated hours")
    line_ax.set_ylabel("billed instances (all endpoints)")
    # the initial allocation is scaled down within minutes: scale the axis to the rest of the run
    first = next(iter(results.values()))
    later = first["times_s"] >= min(3600.0, first["times_s"][-1])
    top = max(r["billed"][later].max() for r in results.values())
    start = max(r["billed"][0] for r in results.values())
    if start > 1.25 * top:
        line_ax.set_ylim(0, 1.25 * top)
        line_ax.annotate(f"t = 0: {start:,.0f} (off scale)", (0.01, 0.97), xycoords="axes fraction", fontsize=8, va="top")
    else:
        line_ax.set_ylim(bottom=0)
    line_ax.grid(True, alpha=0.3)
    line_ax.legend(fontsize=8, loc="upper right")
    line_ax.set_title("Instances over the run")
    tiers = (("utility_iw", "IW"), ("utility_niw", "NIW"), ("utility_spot", "spot"))
    x = np.arange(len(results))
    width = 0.8 / len(tiers)
    for k, (key, label) in enumerate(tiers):
        values = [max(r["utility"][key], 1e-9) for r in results.values()]
        bars = bar_ax.bar(x + (k - 1) * width, values, width, label=label, color=f"C{k + 2}")
        bar_ax.bar_label(bars, labels=[_compact(v) for v in values], fontsize=7)
    bar_ax.set_xticks(x, [f"{m}\ntotal {_compact(r['utility']['utility_total'])}" for m, r in results.items()])
    bar_ax.set_yscale("log")
    bar_ax.set_ylabel("utility")
    bar_ax.grid(True, axis="y", which="both", alpha=0.3)
    bar_ax.legend(fontsize=8)
    bar_ax.set_title("Utility per tier")
    return _save(fig, path, tight=False)


def plot_matrix(episodes: "pd.DataFrame", out_dir: Path) -> Path:
    """Cost against SLO attainment per policy, one panel per scenario: every episode as a faint
    dot, each policy's mean as a labelled marker (``cost_vs_slo.png``)."""
    scenarios = list(dict.fromkeys(episodes["scenario"]))
    policies = list(dict.fromkeys(episodes["policy"]))
    fig = Figure(figsize=(5 * len(scenarios), 4), layout="constrained")
    axes = fig.subplots(1, len(scenarios), squeeze=False)[0]
    for ax, scenario in zip(axes, scenarios):
        for i, policy in enumerate(policies):
            group = episodes[(episodes["scenario"] == scenario) & (episodes["policy"] == policy)]
            x = group["billed_gpu_hours"].astype(float).to_numpy()
            y = group["iw_slo_attainment"].astype(float).to_numpy()
            if not len(group):
                continue
            ax.scatter(x, y, color=f"C{i}", alpha=0.3, s=12)
            ax.scatter(np.nanmean(x), np.nanmean(y), color=f"C{i}", s=60, marker="D", label=policy, edgecolor="k")
        ax.set_title(str(scenario))
        ax.set_xlabel("billed GPU-hours")
        ax.set_ylabel("IW SLO attainment")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, Path(out_dir) / "cost_vs_slo.png")


def plot_frontier(table: "pd.DataFrame", task: str, path: Path) -> Path:
    """One task's cost against SLO attainment (a ``sageserve_env.frontier`` table): each family
    and knob as a line through the knob's values (in knob order, each marker labelled with its value), its
    default ringed in black, the references (a family run only at its defaults) as stars, and
    the Pareto frontier over every point as a dashed staircase (the best attainment reachable
    at each cost)."""
    from sageserve_env.frontier import pareto_mask

    rows = table[table["task"] == task]
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.subplots()
    knobs = rows["knob"].fillna("")
    for i, (family, knob) in enumerate(dict.fromkeys(zip(rows["family"], knobs))):
        group = rows[(rows["family"] == family) & (knobs == knob)].sort_values("value")
        x, y = group["billed_gpu_hours"].to_numpy(float), group["iw_slo_attainment"].to_numpy(float)
        swept = group["value"].notna().to_numpy()
        color = f"C{i}"
        if swept.any():
            ax.plot(x, y, color=color, marker="o", ms=5, lw=1.3, label=f"{family} ({knob})")
            for xi, yi, v in zip(x[swept], y[swept], group["value"].to_numpy(float)[swept]):
                ax.annotate(f"{v:g}", (xi, yi), xytext=(4, -9), textcoords="offset points", fontsize=7, color=color)
        else:
            ax.scatter(x, y, color=color, marker="*", s=150, edgecolor="k", zorder=3, label=family)
        default = group["default"].astype(bool).to_numpy() & swept
        ax.scatter(x[default], y[default], s=90, facecolor="none", edgecolor="k", lw=1.4, zorder=4)
    front = rows[pareto_mask(rows["billed_gpu_hours"], rows["iw_slo_attainment"])].sort_values("billed_gpu_hours")
    fx, fy = front["billed_gpu_hours"].to_numpy(float), front["iw_slo_attainment"].to_numpy(float)
    if len(fx):
        right = rows["billed_gpu_hours"].max()
        ax.step(np.r_[fx, right], np.r_[fy, fy[-1]], where="post", color="grey", ls="--", lw=1, zorder=1,
                label="Pareto frontier")
    ax.scatter([], [], s=90, facecolor="none", edgecolor="k", lw=1.4, label="default knob")
    ax.set_xlabel("billed GPU-hours")
    ax.set_ylabel("IW SLO attainment (TTFT within the SLO)")
    ax.ticklabel_format(useOffset=False)
    ax.set_title(f"{task}: cost against SLO attainment, each family over its main knob")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path, tight=False)
