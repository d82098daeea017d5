"""The SageServe paper's figures from this simulator, and a page setting them beside the authors' numbers.

    python scripts/paper_figures.py [--scenario paper] [--days 1] [--fidelity detailed] [--seed 0]
        [--workers 2] [--out docs/paper] [--runs runs/paper] [--thresholds 0.3,0.4,0.5,0.6,0.7]
        [--windows 15,30,60,120,240,480,960] [--window-policy lt_ua] [--horizon-s S] [key=value ...]

Runs one generated stretch of the scenario (``--days`` days, or ``--horizon-s`` seconds; seed
``--seed``) under reactive, LT-I, LT-U and LT-UA; the reactive policy again at each scale-up
threshold of ``--thresholds`` (scale-down threshold half of it: 0.5/0.25 is the default pair);
and ``--window-policy`` at each planning window of ``--windows`` minutes (the long-term
policies' ``window_minutes`` knob; 60 is the default run). Episodes run in ``--workers``
processes; each writes its outputs (``sageserve_env.cli.finish_run``) to ``RUNS/<name>/`` with
``utilization.csv`` (memory utilization per region, sampled at every decision step).

Writes to ``OUT/``: ``instances_over_time.png``, ``instance_hours_per_region.png``,
``latency_over_time.png`` (hourly IW TTFT and e2e p95; detailed fidelity only, the fast one keeps
no per-request records), ``memory_utilization.png``, ``capacity_source.png``,
``threshold_sweep.png``, ``window_ablation.png``, ``results.json`` (every number of the page)
and ``README.md`` (the page). Every number on the page comes from these runs; the authors'
numbers are quoted with their source (``AUTHORS`` below).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

MAIN_POLICIES = ("reactive", "lt_i", "lt_u", "lt_ua")
LABELS = {"reactive": "Reactive", "lt_i": "LT-I", "lt_u": "LT-U", "lt_ua": "LT-UA"}
SAMPLE_S = 60.0  # utilization samples at most once a simulated minute
HOUR_S = 3600.0
DAY_S = 86400.0

# The authors' numbers, with their source. Nothing measured here.
PAPER = "SageServe (Jaiswal et al., POMACS 9(3), 2025)"
AUTHORS = {
    "model_a_day": {  # model A over one day: instance-hours and IW TTFT p90 (s)
        "source": f"{PAPER}, model A over one day",
        "reactive": (302.0, 18.7), "lt_i": (227.0, 119.0), "lt_u": (248.0, 14.6), "lt_ua": (233.0, 16.9),
    },
    "unified_vs_siloed": {
        "source": "the authors' notebook, one day, weights 3 per IW request, 1 per NIW request, "
                  "1.5 per 15 spot minutes",
        "unified": 4.31e6, "siloed": 4.09e6,
    },
}


@dataclass(frozen=True)
class Job:
    """One episode: a run name, a policy entry (``agents.make_policy`` spec) and the world."""

    name: str
    policy: Any
    scenario: str
    overrides: tuple
    seed: int
    runs: str
    group: str
    knob: Optional[float] = None
    fidelity: str = "detailed"


def parse_list(text: str, kind, what: str) -> List:
    """Comma-separated numbers of ``kind``; a clear error naming the option otherwise."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: {text!r} is not a comma-separated list of {kind.__name__}s")
    if not values:
        raise argparse.ArgumentTypeError(f"{what}: no values in {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="paper", help="scenario preset or YAML path (default: paper)")
    p.add_argument("--days", type=float, default=1.0, help="simulated days (default 1; the paper's week: 7)")
    p.add_argument("--horizon-s", type=float, default=None, help="simulated seconds (overrides --days)")
    p.add_argument("--fidelity", choices=("detailed", "fast"), default="detailed")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated workload")
    p.add_argument("--workers", type=int, default=2, help="episodes in parallel (default 2)")
    p.add_argument("--out", type=Path, default=Path("docs/paper"), help="figures and page (default docs/paper)")
    p.add_argument("--runs", type=Path, default=Path("runs/paper"), help="per-episode outputs (default runs/paper)")
    p.add_argument("--thresholds", default="0.3,0.4,0.5,0.6,0.7",
                   help="reactive scale-up thresholds of the sweep ('' or 'none': no sweep)")
    p.add_argument("--windows", default="15,30,60,120,240,480,960",
                   help="planning windows (minutes) of the ablation ('' or 'none': no ablation)")
    p.add_argument("--window-policy", choices=("lt_i", "lt_u", "lt_ua"), default="lt_ua")
    p.add_argument("--reuse", action="store_true",
                   help="take the episodes whose RUNS/<name>/summary.json exists from there instead of running them")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="scenario overrides for every episode")
    return p


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Validate the options before any episode; parser.error (exit 2) names the bad one."""
    from sageserve_env.config import load_config

    try:
        args.thresholds = ([] if args.thresholds.strip().lower() in ("", "none") else
                           parse_list(args.thresholds, float, "--thresholds"))
        args.windows = ([] if args.windows.strip().lower() in ("", "none") else
                        parse_list(args.windows, int, "--windows"))
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if any(not 0.0 < t <= 1.0 for t in args.thresholds):
        parser.error(f"--thresholds must lie in (0, 1], got {args.thresholds}")
    if any(w < 1 for w in args.windows):
        parser.error(f"--windows must be positive minutes, got {args.windows}")
    horizon = args.horizon_s if args.horizon_s is not None else args.days * DAY_S
    if not np.isfinite(horizon) or horizon < 60.0:
        parser.error(f"the horizon must be at least 60 s (--days {args.days}, --horizon-s {args.horizon_s})")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    args.horizon = float(horizon)
    args.overrides = [*args.overrides, f"duration_s={args.horizon:g}"]
    try:
        load_config(args.scenario, args.overrides)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        parser.error(f"scenario {args.scenario!r} with {args.overrides}: {exc}")
    return args


def jobs_of(args: argparse.Namespace) -> List[Job]:
    """The episodes: the four policies, the threshold sweep, the window ablation (the default
    settings' runs are shared)."""
    common = dict(scenario=args.scenario, overrides=tuple(args.overrides), seed=args.seed, runs=str(args.runs),
                  fidelity=args.fidelity)
    jobs = [Job(p, p, group="main", **common) for p in MAIN_POLICIES]
    for t in args.thresholds:
        if t == 0.5:
            jobs.append(Job("reactive", "reactive", group="sweep", knob=t, **common))
            continue
        entry = {"_target_": "agents.reactive:ReactivePolicy", "up_threshold": t, "down_threshold": t / 2}
        jobs.append(Job(f"reactive_up{t:g}", entry, group="sweep", knob=t, **common))
    for w in args.windows:
        if w == 60:
            jobs.append(Job(args.window_policy, args.window_policy, group="window", knob=w, **common))
            continue
        entry = {"_target_": "agents.long_term:LongTermPolicy", "mode": args.window_policy, "window_minutes": w}
        jobs.append(Job(f"{args.window_policy}_w{w}", entry, group="window", knob=w, **common))
    return jobs


def run_job(job: Job) -> Dict[str, Any]:
    """Run one episode and write its outputs and ``utilization.csv``; returns its summary."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from agents import make_policy
    from agents.runner import make_env_for, run_episode
    from sageserve_env.cli import build_workload, finish_run
    from sageserve_env.config import load_config
    from sageserve_env.sim.stats import Stat

    cfg = load_config(job.scenario, list(job.overrides))
    workload = build_workload(cfg, job.seed)
    policy = make_policy(job.policy, job.name)
    env = make_env_for(policy, {"scenario": cfg, "horizon_s": cfg.duration_s, "fidelity": job.fidelity})
    samples: List[List[float]] = []
    n_models = len(cfg.models)

    def sample(t: float) -> None:
        if samples and t < samples[-1][0] + SAMPLE_S:
            return
        st = env.unwrapped.sim.statistics()
        active = st[:, Stat.ACTIVE].reshape(-1, n_models)
        util = st[:, Stat.UTILIZATION].reshape(-1, n_models)
        weight = active.sum(axis=1)
        mean = np.where(weight > 0, (util * active).sum(axis=1) / np.maximum(weight, 1), np.nan)
        samples.append([t, *mean.tolist()])

    result = run_episode(env, policy, options={"workload": workload}, on_step=sample)
    out = Path(job.runs) / job.name
    extra = {"policy": job.name, "reward": result.reward, "decision_steps": result.steps,
             "policy_stats": result.policy_stats}
    summary = finish_run(result.env.sim, result.wall_seconds, cfg, out, extra=extra, plots=False)
    regions = [r.name for r in cfg.regions]
    with open(out / "utilization.csv", "w") as f:
        f.write(",".join(["time_s", *regions]) + "\n")
        for row in samples:
            f.write(",".join(f"{v:.6g}" for v in row) + "\n")
    (out / "job.json").write_text(json.dumps(job_key(job)) + "\n")
    return summary


def job_key(job: Job) -> Dict[str, Any]:
    """What makes an episode's result: everything of the job but where it is written."""
    key = asdict(job)
    del key["runs"], key["group"], key["knob"]
    key["overrides"] = list(key["overrides"])
    return key


# -- reading a run's files ---------------------------------------------------------------

def billed_series(run: Path, step_s: float, end_s: float):
    """Billed instances (active + starting + draining) over the run, summed over endpoints, on a
    grid of ``step_s``: (times, counts)."""
    import pandas as pd

    tl = pd.read_csv(run / "timeline.csv")
    tl["billed"] = tl["active"] + tl["starting"] + tl["draining"]
    times = np.arange(0.0, end_s, step_s)
    total = np.zeros(len(times))
    for _, g in tl.groupby(["region", "model"]):
        g = g.drop_duplicates("time_s", keep="last")
        idx = np.searchsorted(g["time_s"].to_numpy(), times, side="right") - 1
        vals = g["billed"].to_numpy()
        total += np.where(idx >= 0, vals[np.maximum(idx, 0)], 0)
    return times, total


def capacity_sources(run: Path, end_s: float) -> Dict[str, float]:
    """Instance-hours of scaled-up instances by where their capacity came from.

    Each scale-up (``scaling_events.csv``) starts an instance of its kind (``reclaim``: the
    model's own spot server; ``load_other``: another model's spot server; ``load_free``: a
    server holding no model; ``undrain``: a draining instance kept); each drain ends the
    endpoint's most recent scaled-up instance still serving, or one of its initial ones if none
    (last in, first out). An instance counts from its scale-up to its drain or the run's end.
    """
    import pandas as pd

    ev = pd.read_csv(run / "scaling_events.csv")
    hours: Dict[str, float] = {"reclaim": 0.0, "load_other": 0.0, "load_free": 0.0, "undrain": 0.0}
    for _, g in ev.groupby(["region", "model"], sort=False):
        stack: List[tuple] = []
        for t, kind in zip(g["time_s"].to_numpy(), g["kind"].to_numpy()):
            if kind == "drain":
                if stack:
                    k, t0 = stack.pop()
                    hours[k] += (t - t0) / HOUR_S
            else:
                stack.append((kind, t))
        for k, t0 in stack:
            hours[k] += max(end_s - t0, 0.0) / HOUR_S
    return hours


def hourly_p95(run: Path, end_s: float) -> Optional[Dict[str, np.ndarray]]:
    """IW TTFT and e2e p95 per hour of arrival from ``requests.parquet`` (None without it)."""
    path = run / "requests.parquet"
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["arrival_s", "tier", "ttft_s", "e2e_s"]).to_pandas()
    t = t[t["tier"].astype(str).str.upper() == "IW"]
    n = int(np.ceil(end_s / HOUR_S))
    hour = np.minimum((t["arrival_s"].to_numpy() // HOUR_S).astype(int), n - 1)
    out = {"hour": np.arange(n) + 0.5}
    for col in ("ttft_s", "e2e_s"):
        v = t[col].to_numpy()
        out[col] = np.array([np.nanpercentile(v[(hour == h) & np.isfinite(v)], 95)
                             if np.isfinite(v[hour == h]).any() else np.nan for h in range(n)])
    return out


def model_figures(summary: Dict[str, Any], run: Path, model: str) -> Dict[str, Optional[float]]:
    """One model's instance-hours (15-minute peak billing and billed) over its regions, and its
    IW TTFT p90 from the records (None in the fast fidelity)."""
    rows = [e for e in summary["per_endpoint"] if e["model"] == model]
    ttft = None
    path = run / "requests.parquet"
    if path.is_file():
        import pyarrow.parquet as pq

        t = pq.read_table(path, columns=["model", "tier", "ttft_s"]).to_pandas()
        v = t[(t["model"].astype(str) == model) & (t["tier"].astype(str).str.upper() == "IW")]["ttft_s"].to_numpy()
        v = v[np.isfinite(v)]
        ttft = float(np.percentile(v, 90)) if len(v) else None
    return {"instance_hours_15min_peak": float(sum(e["instance_hours_15min_peak"] for e in rows)),
            "billed_instance_hours": float(sum(e["billed_instance_hours"] for e in rows)),
            "iw_ttft_p90": ttft}


# -- figures -----------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def make_figures(out: Path, runs: Path, summaries: Dict[str, Dict], jobs: List[Job], end_s: float,
                 regions: Sequence[str], results: Dict[str, Any]) -> List[str]:
    """Draw every figure into ``out`` and fill ``results`` with the numbers they show."""
    plt = _plt()
    made = []
    step = max(60.0, end_s / 600)
    hours_axis = end_s / HOUR_S

    fig, ax = plt.subplots(figsize=(8, 3.5))
    results["instances_over_time"] = {}
    for p in MAIN_POLICIES:
        t, n = billed_series(runs / p, step, end_s)
        ax.step(t / HOUR_S, n, where="post", label=LABELS[p])
        results["instances_over_time"][p] = {"min": float(n.min()), "mean": float(n.mean()), "max": float(n.max())}
    ax.set(xlabel="hour", ylabel="billed instances (all endpoints)", xlim=(0, hours_axis), yscale="log")
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout(); fig.savefig(out / "instances_over_time.png", dpi=110); plt.close(fig)
    made.append("instances_over_time.png")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(MAIN_POLICIES)
    results["instance_hours_per_region"] = {}
    for i, p in enumerate(MAIN_POLICIES):
        per = {r["region"]: r["instance_hours_15min_peak"] for r in summaries[p]["per_region"]}
        results["instance_hours_per_region"][p] = per
        ax.bar(np.arange(len(regions)) + i * width, [per[r] for r in regions], width, label=LABELS[p])
    ax.set_xticks(np.arange(len(regions)) + width * (len(MAIN_POLICIES) - 1) / 2, regions)
    ax.set(ylabel="instance-hours (15-min peak)")
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout(); fig.savefig(out / "instance_hours_per_region.png", dpi=110); plt.close(fig)
    made.append("instance_hours_per_region.png")

    lat = {p: hourly_p95(runs / p, end_s) for p in MAIN_POLICIES}
    if all(v is not None for v in lat.values()):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        results["latency_over_time"] = {}
        for p in MAIN_POLICIES:
            for ax, col in zip(axes, ("ttft_s", "e2e_s")):
                ax.plot(lat[p]["hour"], lat[p][col], marker=".", label=LABELS[p])
            results["latency_over_time"][p] = {
                "ttft_p95_hourly_max": float(np.nanmax(lat[p]["ttft_s"])),
                "e2e_p95_hourly_max": float(np.nanmax(lat[p]["e2e_s"]))}
        axes[0].set(xlabel="hour", ylabel="IW TTFT p95 (s)", yscale="log")
        axes[1].set(xlabel="hour", ylabel="IW e2e p95 (s)", yscale="log")
        axes[0].legend(fontsize=8)
        fig.tight_layout(); fig.savefig(out / "latency_over_time.png", dpi=110); plt.close(fig)
        made.append("latency_over_time.png")

    import pandas as pd

    fig, axes = plt.subplots(1, len(regions), figsize=(4 * len(regions), 3.2), sharey=True)
    axes = np.atleast_1d(axes)
    results["memory_utilization"] = {}
    for p in MAIN_POLICIES:
        u = pd.read_csv(runs / p / "utilization.csv")
        results["memory_utilization"][p] = {r: float(np.nanmean(u[r])) for r in regions}
        for ax, r in zip(axes, regions):
            ax.plot(u["time_s"] / HOUR_S, u[r], label=LABELS[p], lw=0.8)
    for ax, r in zip(axes, regions):
        ax.set(title=r, xlabel="hour", xlim=(0, hours_axis))
    axes[0].set_ylabel("memory utilization (active instances)")
    axes[0].legend(fontsize=8)
    fig.tight_layout(); fig.savefig(out / "memory_utilization.png", dpi=110); plt.close(fig)
    made.append("memory_utilization.png")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    kinds = (("reclaim", "own spot"), ("load_other", "another model's spot"), ("load_free", "free server"),
             ("undrain", "kept draining"))
    results["capacity_source"] = {}
    bottom = np.zeros(len(MAIN_POLICIES))
    src = {p: capacity_sources(runs / p, end_s) for p in MAIN_POLICIES}
    for k, label in kinds:
        vals = np.array([src[p][k] for p in MAIN_POLICIES])
        ax.bar([LABELS[p] for p in MAIN_POLICIES], vals, bottom=bottom, label=label)
        bottom += vals
    results["capacity_source"] = src
    ax.set(ylabel="instance-hours of scaled-up instances")
    ax.legend(fontsize=8)
    fig.tight_layout(); fig.savefig(out / "capacity_source.png", dpi=110); plt.close(fig)
    made.append("capacity_source.png")

    for group, fname in (("sweep", "threshold_sweep.png"), ("window", "window_ablation.png")):
        sel = sorted([j for j in jobs if j.group == group], key=lambda j: j.knob)
        if not sel:
            continue
        pts = [{"knob": j.knob, "run": j.name,
                "instance_hours_15min_peak": summaries[j.name]["instance_hours_15min_peak"],
                "iw_ttft_p90": summaries[j.name]["iw_ttft_p90"],
                "iw_slo_attainment": summaries[j.name]["iw_slo_attainment"]} for j in sel]
        results[group] = pts
        xs = np.array([q["iw_ttft_p90"] if q["iw_ttft_p90"] is not None else np.nan for q in pts], dtype=float)
        ys = np.array([q["instance_hours_15min_peak"] for q in pts], dtype=float)
        log_x = bool(np.all(xs[np.isfinite(xs)] > 0)) and np.isfinite(xs).any()
        if group == "sweep":  # the paper's view: cost against tail latency, one point per threshold pair
            fig, ax = plt.subplots(figsize=(6, 3.8))
            ax.plot(xs, ys, marker="o")
            for q, x, y in zip(pts, xs, ys):
                ax.annotate(f"up {q['knob']:g}", (x, y), fontsize=8, textcoords="offset points", xytext=(4, 4))
            ax.set(xlabel="IW TTFT p90 (s)", ylabel="instance-hours (15-min peak)", title="reactive thresholds")
            if log_x:
                ax.set_xscale("log")
        else:  # both figures against the window
            fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
            ws = [q["knob"] for q in pts]
            a1.plot(ws, ys, marker="o")
            a2.plot(ws, xs, marker="o")
            a1.set(xlabel="planning window (min)", ylabel="instance-hours (15-min peak)", xscale="log")
            a2.set(xlabel="planning window (min)", ylabel="IW TTFT p90 (s)", xscale="log")
            if log_x:
                a2.set_yscale("log")
            for a in (a1, a2):
                a.set_xticks(ws, [f"{w:g}" for w in ws])
                a.minorticks_off()
        fig.tight_layout(); fig.savefig(out / fname, dpi=110); plt.close(fig)
        made.append(fname)
    return made


# -- the page ----------------------------------------------------------------------------

def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"


def write_page(out: Path, args: argparse.Namespace, command: str, wall_s: float, results: Dict[str, Any],
               made: List[str], regions: Sequence[str]) -> None:
    """``OUT/README.md``: each figure, our numbers from ``results`` and the authors' where known."""
    a = AUTHORS["model_a_day"]
    L: List[str] = ["# The SageServe paper's figures from this simulator", ""]
    reused = (f"; {results['reused']} of the episodes were read from an earlier run of the same settings "
              f"(`--reuse`)" if results.get("reused") else "")
    sim_s = sum(v["wall_seconds"] or 0.0 for v in results["summaries"].values())
    if results.get("first_run"):
        f0 = results["first_run"]
        L += [f"The episodes were run by `{f0['command']}` in {f0['wall_seconds']:.0f} s of wall time; "
              "the figures and this page were then remade from their files by the command below.", ""]
    L += [f"Made by `{command}` in {wall_s:.0f} s of wall time ({results['episodes']} episodes{reused}; "
          f"the episodes' simulations took {sim_s:.0f} s in all, "
          f"{args.workers} worker(s), on a machine of {os.cpu_count()} cores). "
          f"Scenario `{args.scenario}`, {args.horizon / DAY_S:g} simulated day(s) ({args.horizon:g} s), "
          f"{args.fidelity} fidelity, workload seed {args.seed}"
          + (f", overrides `{' '.join(args.overrides[:-1])}`" if len(args.overrides) > 1 else "") + ". "
          "Every number below comes from these runs (`results.json`); the authors' numbers are quoted "
          "with their source. The runs' own files are in the `--runs` folder (not part of this page).", ""]
    L += ["Instance-hours are SageServe's billing metric (`instance_hours_15min_peak`: each endpoint's peak "
          "billed instances per 15 minutes); latencies are of interactive (IW) requests.", ""]

    L += ["## Model A over the day, beside the paper", "",
          f"The authors' figures: {a['source']}, on their production trace. Ours: model A's endpoints "
          f"summed over the regions, on the scenario's generated workload "
          f"({results['requests_total']:,} requests, {results['model_share']:.0%} of them model A's), so the "
          "absolute figures differ with the load.", "",
          "| policy | instance-hours, ours (15-min peak / billed) | paper | IW TTFT p90 (s), ours | paper |",
          "|---|---|---|---|---|"]
    for p in MAIN_POLICIES:
        m = results["model_a"][p]
        ih, tt = a[p]
        L.append(f"| {LABELS[p]} | {_f(m['instance_hours_15min_peak'])} / {_f(m['billed_instance_hours'])} | {ih:g} | {_f(m['iw_ttft_p90'])} | {tt:g} |")
    if args.horizon != DAY_S:
        L += ["", f"The paper's figures are for one day; these runs cover {args.horizon / DAY_S:g} day(s)."]
    L += [""]

    L += ["## All models", "", "| policy | instance-hours | billed instance-hours | IW TTFT p90 / p95 (s) | "
          "IW e2e p95 (s) | IW SLO attainment |", "|---|---|---|---|---|---|"]
    for p in MAIN_POLICIES:
        s = results["summaries"][p]
        L.append(f"| {LABELS[p]} | {_f(s['instance_hours_15min_peak'])} | {_f(s['billed_instance_hours'])} | "
                 f"{_f(s['iw_ttft_p90'])} / {_f(s['iw_ttft_p95'])} | {_f(s['iw_e2e_p95'])} | "
                 f"{_f(s['iw_slo_attainment'])} |")
    L += [""]

    L += ["## Instances over time per policy", "", "![instances over time](instances_over_time.png)", "",
          "| policy | billed instances min / mean / max |", "|---|---|"]
    for p in MAIN_POLICIES:
        v = results["instances_over_time"][p]
        L.append(f"| {LABELS[p]} | {_f(v['min'])} / {_f(v['mean'])} / {_f(v['max'])} |")
    L += [""]

    L += ["## Instance-hours per region per policy", "", "![instance-hours per region](instance_hours_per_region.png)",
          "", "| policy | " + " | ".join(regions) + " |", "|---|" + "---|" * len(regions)]
    for p in MAIN_POLICIES:
        v = results["instance_hours_per_region"][p]
        L.append(f"| {LABELS[p]} | " + " | ".join(_f(v[r]) for r in regions) + " |")
    L += [""]

    L += ["## IW TTFT and e2e p95 over time", ""]
    if "latency_over_time.png" in made:
        L += ["![p95 latencies per hour](latency_over_time.png)", "",
              "| policy | worst hourly TTFT p95 (s) | worst hourly e2e p95 (s) |", "|---|---|---|"]
        for p in MAIN_POLICIES:
            v = results["latency_over_time"][p]
            L.append(f"| {LABELS[p]} | {_f(v['ttft_p95_hourly_max'])} | {_f(v['e2e_p95_hourly_max'])} |")
        if args.horizon < 7 * DAY_S:
            L += ["", f"The paper shows a week; these runs cover {args.horizon / DAY_S:g} day(s) "
                  "(`--days 7` for the week)."]
    else:
        L += ["Not produced: the fast fidelity keeps no per-request records (`--fidelity detailed`)."]
    L += [""]

    L += ["## Memory utilization per region", "", "![memory utilization](memory_utilization.png)", "",
          "Mean KV-memory utilization of the active instances of each region (weighted by their number), "
          "sampled once a simulated minute at the policies' decision steps.", "",
          "| policy | " + " | ".join(regions) + " |", "|---|" + "---|" * len(regions)]
    for p in MAIN_POLICIES:
        v = results["memory_utilization"][p]
        L.append(f"| {LABELS[p]} | " + " | ".join(_f(v[r]) for r in regions) + " |")
    L += [""]

    L += ["## Where scaled capacity came from", "", "![capacity source](capacity_source.png)", "",
          "Instance-hours of the instances added by scale-ups, by the server they came from. A drain is "
          "matched with the endpoint's most recent scale-up (last in, first out), so this is an attribution, "
          "not a per-server record.", "",
          "| policy | own spot | another model's spot | free server | kept draining |", "|---|---|---|---|---|"]
    for p in MAIN_POLICIES:
        v = results["capacity_source"][p]
        L.append(f"| {LABELS[p]} | {_f(v['reclaim'])} | {_f(v['load_other'])} | {_f(v['load_free'])} | "
                 f"{_f(v['undrain'])} |")
    if all(results["capacity_source"][p]["load_other"] == 0 for p in MAIN_POLICIES):
        own = all(results["capacity_source"][p]["load_free"] == 0 for p in MAIN_POLICIES)
        L += ["", "No scale-up of these runs took another model's spot server (scaling level 2)"
              + (": the endpoints scaled up within the spot servers their own scale-downs had left." if own else ".")]
    L += [""]

    for group, fname, title, knob in (("sweep", "threshold_sweep.png", "Reactive threshold sweep",
                                       "scale-up / scale-down threshold"),
                                      ("window", "window_ablation.png", "Long-term window ablation",
                                       f"{LABELS[args.window_policy]} planning window (min)")):
        L += [f"## {title}", ""]
        if group not in results:
            L += ["Not produced (no values given).", ""]
            continue
        L += [f"![{title}]({fname})", ""]
        if group == "window":
            L += ["The long-term policies' `window_minutes` knob: a plan every window, for the forecast of the "
                  "window's minutes (60: SageServe's hour).", ""]
        L += [f"| {knob} | instance-hours | IW TTFT p90 (s) | IW SLO attainment |", "|---|---|---|---|"]
        for q in results[group]:
            k = f"{q['knob']:g} / {q['knob'] / 2:g}" if group == "sweep" else f"{q['knob']:g}"
            L.append(f"| {k} | {_f(q['instance_hours_15min_peak'])} | {_f(q['iw_ttft_p90'])} | "
                     f"{_f(q['iw_slo_attainment'])} |")
        if group == "sweep":
            L += ["", f"The paper's reactive point for model A over one day: {a['reactive'][0]:g} instance-hours at "
                  f"IW TTFT p90 {a['reactive'][1]:g} s ({a['source']})."]
        L += [""]

    u = AUTHORS["unified_vs_siloed"]
    L += ["## Not on this page", "",
          f"- Unified against siloed serving (the authors' utility {u['unified'] / 1e6:.2f}M unified against "
          f"{u['siloed'] / 1e6:.2f}M siloed; {u['source']}): `scripts/unified_vs_siloed.py`, "
          "measured in `docs/deployments.md`.", ""]
    (out / "README.md").write_text("\n".join(L))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = check_args(parser.parse_args(argv), parser)
    command = "python scripts/paper_figures.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    from sageserve_env.config import load_config

    cfg = load_config(args.scenario, args.overrides)
    regions = [r.name for r in cfg.regions]
    model = "A" if "A" in list(cfg.models) else list(cfg.models)[0]
    jobs = jobs_of(args)
    unique = list({j.name: j for j in jobs}.values())
    args.out.mkdir(parents=True, exist_ok=True)
    args.runs.mkdir(parents=True, exist_ok=True)
    print(f"{len(unique)} episodes of {args.horizon:g} s ({args.fidelity}), {args.workers} worker(s)", file=sys.stderr)
    start = time.perf_counter()
    summaries: Dict[str, Dict] = {}
    if args.reuse:
        for j in unique:
            path = args.runs / j.name / "summary.json"
            job_file = args.runs / j.name / "job.json"
            same = job_file.is_file() and json.loads(job_file.read_text()) == job_key(j)
            if same and path.is_file() and (args.runs / j.name / "utilization.csv").is_file():
                summaries[j.name] = json.loads(path.read_text())
    todo = [j for j in unique if j.name not in summaries]
    if args.workers == 1 or len(todo) <= 1:
        summaries.update({j.name: run_job(j) for j in todo})
    else:
        with ProcessPoolExecutor(min(args.workers, len(todo))) as pool:
            summaries.update(zip([j.name for j in todo], pool.map(run_job, todo)))
    results_reused = len(unique) - len(todo)
    results: Dict[str, Any] = {"episodes": len(unique), "reused": results_reused, "horizon_s": args.horizon, "fidelity": args.fidelity,
                               "scenario": args.scenario, "seed": args.seed, "model": model}
    keys = ("instance_hours_15min_peak", "billed_instance_hours", "iw_ttft_p90", "iw_ttft_p95", "iw_e2e_p95",
            "iw_slo_attainment", "wall_seconds")
    results["summaries"] = {n: {k: s.get(k) for k in keys} for n, s in summaries.items()}
    results["requests_total"] = int(summaries["reactive"]["requests_total"])
    results["model_share"] = (sum(e["requests_total"] for e in summaries["reactive"]["per_endpoint"]
                                  if e["model"] == model) / max(results["requests_total"], 1))
    results["model_a"] = {p: model_figures(summaries[p], args.runs / p, model) for p in MAIN_POLICIES}
    made = make_figures(args.out, args.runs, summaries, jobs, args.horizon, regions, results)
    wall = time.perf_counter() - start
    results["wall_seconds"] = wall
    results["command"] = command
    previous = args.out / "results.json"
    if args.reuse and results_reused == len(unique) and previous.is_file():
        prev = json.loads(previous.read_text())
        first = prev.get("first_run") or ({"command": prev.get("command"), "wall_seconds": prev.get("wall_seconds")}
                                          if not prev.get("reused") else None)
        if first and set(prev.get("summaries", {})) == set(summaries):
            results["first_run"] = first
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    write_page(args.out, args, command, wall, results, made, regions)
    print(f"{len(made)} figures and README.md in {args.out} ({wall:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
