"""The unified-vs-siloed comparison (the paper's motivating experiment): one workload served by
each deployment (``sageserve_env.workload.deployment``) under the same policy, compared on
GPU-hours, instances over the day and utility per tier.

Utility (the authors' weights): 3 per IW request served, 1 per NIW request served, 1.5 per 15
minutes of one server donated to spot. A request counts as *served* when it completed within the
run (``requests_completed``: its last output token came before the end), whatever its latency, as
the authors' notebook counts every request its router logged. Where per-request records exist
(the detailed fidelity) the utility is also given *within SLO*: an IW request counts only if it
completed with its first token within its SLO (TTFT <= ``sla_s``), an NIW one only if it completed
by its deadline (e2e <= ``sla_s``). Donated time is the integral of servers in the ``spot`` state
(``donated_gpu_hours`` / GPUs per server), free servers (holding no model) not included.
``run_comparison`` drives both runs; ``scripts/unified_vs_siloed.py`` is the command.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sageserve_env.config import SimConfig, load_config
from sageserve_env.workload.workload import IW, NIW

DEPLOYMENT_ORDER = ("unified", "siloed")


@dataclass(frozen=True)
class UtilityWeights:
    """Utility per served request of each tier and per donated server-quarter-hour."""

    iw: float = 3.0
    niw: float = 1.0
    spot_per_15min: float = 1.5


def tier_utility(summary: Dict[str, Any], cfg: SimConfig, weights: UtilityWeights = UtilityWeights(),
                 records: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, Optional[float]]:
    """The utility terms of a run's ``metrics.summarize`` output (either fidelity): served counts,
    donated server-hours, utility per tier and their total; with the run's per-request ``records``
    also the served counts and total within SLO (None without them)."""
    iw = summary["requests_completed"] - summary["niw_completed"]
    niw = summary["niw_completed"]
    gpus = {r.name: cfg.hardware[r.hardware].gpus_per_server for r in cfg.regions}
    spot_h = sum(row["donated_gpu_hours"] / gpus[row["region"]] for row in summary["per_region"])
    u = {"iw_served": float(iw), "niw_served": float(niw), "spot_server_hours": float(spot_h),
         "utility_iw": weights.iw * iw, "utility_niw": weights.niw * niw,
         "utility_spot": weights.spot_per_15min * 4.0 * spot_h}
    u["utility_total"] = u["utility_iw"] + u["utility_niw"] + u["utility_spot"]
    u.update(iw_served_in_slo=None, niw_served_in_slo=None, utility_total_in_slo=None)
    if records is not None:
        done = np.isfinite(records["completion_s"])
        arrival, sla, tier = records["arrival_s"], records["sla_s"], records["tier"]
        iw_in = int(np.count_nonzero(done & (tier == IW) & (records["first_token_s"] - arrival <= sla)))
        niw_in = int(np.count_nonzero(done & (tier == NIW) & (records["completion_s"] - arrival <= sla)))
        u.update(iw_served_in_slo=float(iw_in), niw_served_in_slo=float(niw_in),
                 utility_total_in_slo=weights.iw * iw_in + weights.niw * niw_in + u["utility_spot"])
    return u


def billed_instances(timeline: Sequence[Tuple], n_regions: int, n_models: int, times: np.ndarray) -> np.ndarray:
    """Billed instances (active + starting + draining) of every endpoint at ``times``, shape
    (len(times), regions, models), from a fleet's timeline (one row per change of an endpoint, in
    time order; of several rows at one instant the last holds)."""
    tl = np.asarray(timeline, dtype=float).reshape(-1, 7)
    out = np.zeros((len(times), n_regions, n_models))
    for r in range(n_regions):
        for m in range(n_models):
            rows = tl[(tl[:, 1] == r) & (tl[:, 2] == m)]
            held = np.searchsorted(rows[:, 0], times, side="right") - 1
            out[:, r, m] = np.where(held >= 0, rows[np.maximum(held, 0), 3:6].sum(axis=1), 0.0)
    return out


def deployment_configs(scenario: str | SimConfig, overrides: Sequence[str] = ()) -> Dict[str, SimConfig]:
    """The scenario once per deployment, everything else equal."""
    return {mode: load_config(scenario, [*overrides, f"deployment.mode={mode}"]) for mode in DEPLOYMENT_ORDER}


def run_comparison(configs: Dict[str, SimConfig], workload, policy_spec: str, out_dir: Path | str, *,
                   fidelity: str = "detailed", plots: bool = True, sample_s: float = 60.0) -> Dict[str, Dict[str, Any]]:
    """Run ``workload`` (its requests naming catalogue models) under ``policy_spec`` in each
    deployment of ``configs``; write every run's outputs to ``out_dir/<deployment>``. Returns per
    deployment its summary, utility terms and billed instances per ``sample_s`` (total, and its
    prod and dev parts)."""
    from agents import make_policy
    from agents.runner import make_env_for, run_episode
    from sageserve_env.cli import finish_run

    results: Dict[str, Dict[str, Any]] = {}
    for mode, cfg in configs.items():
        policy = make_policy(policy_spec)
        env = make_env_for(policy, {"scenario": cfg, "horizon_s": cfg.duration_s, "fidelity": fidelity})
        start = time.perf_counter()
        episode = run_episode(env, policy, options={"workload": workload})
        sim = episode.env.sim
        summary = finish_run(sim, time.perf_counter() - start, cfg, Path(out_dir) / mode, plots=plots,
                             extra={"policy": policy_spec, "deployment": mode, "reward": episode.reward})
        times = np.arange(0.0, sim.now + 1e-9, sample_s)
        per_endpoint = billed_instances(sim.fleet.timeline, len(cfg.regions), len(cfg.models), times)
        tiers = np.array([cfg.models[m].tier for m in cfg.model_names])
        results[mode] = {
            "config": cfg, "summary": summary, "utility": tier_utility(summary, cfg, records=sim.records()),
            "times_s": times,
            "billed": per_endpoint.sum(axis=(1, 2)),
            "billed_prod": per_endpoint[:, :, tiers == "IW"].sum(axis=(1, 2)),
            "billed_dev": per_endpoint[:, :, tiers == "NIW"].sum(axis=(1, 2)),
        }
    return results


TABLE_ROWS = (
    ("billed GPU-hours", lambda s, u: s["billed_gpu_hours"], "{:,.0f}"),
    ("instance-hours (15-min peak)", lambda s, u: s["instance_hours_15min_peak"], "{:,.0f}"),
    ("donated server-hours (spot)", lambda s, u: u["spot_server_hours"], "{:,.0f}"),
    ("IW requests served / arrived", lambda s, u: f"{u['iw_served']:,.0f} / {s['iw_requests']:,}", "{}"),
    ("NIW requests served / arrived", lambda s, u: f"{u['niw_served']:,.0f} / {s['niw_requests']:,}", "{}"),
    ("IW TTFT p95 (s)", lambda s, u: s["iw_ttft_p95"], "{:.2f}"),
    ("IW SLO attainment", lambda s, u: s["iw_slo_attainment"], "{:.4f}"),
    ("NIW deadline misses", lambda s, u: s["niw_deadline_misses"], "{:,}"),
    ("utility IW (3 / request)", lambda s, u: u["utility_iw"], "{:,.0f}"),
    ("utility NIW (1 / request)", lambda s, u: u["utility_niw"], "{:,.0f}"),
    ("utility spot (1.5 / 15 server-min)", lambda s, u: u["utility_spot"], "{:,.0f}"),
    ("utility total", lambda s, u: u["utility_total"], "{:,.0f}"),
    ("IW / NIW served within SLO", lambda s, u: None if u["iw_served_in_slo"] is None else
     f"{u['iw_served_in_slo']:,.0f} / {u['niw_served_in_slo']:,.0f}", "{}"),
    ("utility total within SLO", lambda s, u: u["utility_total_in_slo"], "{:,.0f}"),
)


def comparison_table(results: Dict[str, Dict[str, Any]]) -> str:
    """The Markdown table of ``run_comparison``'s results: one row per figure, one column per
    deployment."""
    modes = list(results)
    lines = ["| | " + " | ".join(modes) + " |", "|---|" + "---:|" * len(modes)]
    for label, get, fmt in TABLE_ROWS:
        cells = []
        for mode in modes:
            value = get(results[mode]["summary"], results[mode]["utility"])
            cells.append("-" if value is None else fmt.format(value))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_rows(results: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One flat row per deployment (for CSV): the summary's headline figures and the utility terms."""
    keys = ("billed_gpu_hours", "instance_hours_15min_peak", "donated_gpu_hours", "iw_requests", "niw_requests",
            "iw_ttft_p95", "iw_slo_attainment", "niw_deadline_misses", "scale_ups", "scale_downs")
    return [{"deployment": mode, **{k: r["summary"].get(k) for k in keys}, **r["utility"]} for mode, r in results.items()]


__all__ = ["UtilityWeights", "billed_instances", "comparison_table",
           "deployment_configs", "run_comparison", "table_rows", "tier_utility"]
