"""Cost against SLO attainment on the v1 tasks: each baseline family over its main knob, and the frontier.

    python scripts/frontier.py                                    # the fast tasks' first test seed
    python scripts/frontier.py tasks=[Burst-fast-v1] seeds=[20000,20001] out=results/frontier_burst
    python scripts/frontier.py sweep.lt_ua.target_utilization=[0.3,0.5] '~sweep.chiron' references=[]

For each task and seed, every point of the sweep (``sageserve_env.frontier.sweep_points``: a
family, one of its knobs, a value) and every reference family at its defaults is one episode of
``evaluate.py``'s ``run_one``, run by ``launch.run_jobs`` in ``workers`` processes, its outputs
under ``out/runs/<task>/<point>/seed_<n>/``. Tasks run one after the other; after each, ``out/``
holds ``episodes.csv`` (one row per episode), ``frontier.csv`` (one row per task and point, the
means over the seeds, ``on_frontier`` marking the Pareto set) and ``frontier_<task>.png``.
``python -m sageserve_env.frontier out/frontier.csv RESULTS.csv`` places an evaluation's
policies against it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # evaluate.py (its run_one, imported by the workers too)

import pandas as pd  # noqa: E402

from sageserve_env.app import Job  # noqa: E402
from sageserve_env.app import run as run_app  # noqa: E402
from sageserve_env.config import ConfigError  # noqa: E402


@dataclass
class FrontierConfig:
    """The sweep; defaults in ``configs/commands/frontier.yaml``."""

    tasks: List[str] = field(default_factory=list)
    seeds: List[int] = field(default_factory=list)
    sweep: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)
    references: List[str] = field(default_factory=list)
    horizon_s: Optional[float] = None
    out: str = "results/frontier"
    workers: int = 1


FRONTIER_FILES = ("episodes.csv", "frontier.csv", "timing.csv")


def check(cfg: FrontierConfig) -> list:
    """The sweep's points; a ConfigError naming an unknown task, family or knob, or a bad option."""
    from sageserve_env.frontier import sweep_points
    from sageserve_env.tasks import task

    if not cfg.tasks or not cfg.seeds:
        raise ConfigError("tasks and seeds must each name at least one entry")
    for t in cfg.tasks:
        try:
            task(t)
        except ValueError as exc:
            raise ConfigError(f"tasks: {exc}") from None
    for what, values in (("tasks", cfg.tasks), ("seeds", cfg.seeds)):
        if len(set(values)) < len(values):
            raise ConfigError(f"{what} lists an entry more than once: {values}")
    if any(s < 0 for s in cfg.seeds):
        raise ConfigError(f"seeds must be >= 0, got {cfg.seeds}")
    if cfg.horizon_s is not None and not (math.isfinite(cfg.horizon_s) and cfg.horizon_s > 0):
        raise ConfigError(f"horizon_s must be a finite number of seconds > 0 (or null: the task's), "
                          f"got {cfg.horizon_s}")
    if cfg.workers < 1:
        raise ConfigError(f"workers must be >= 1, got {cfg.workers}")
    try:
        points = sweep_points(cfg.sweep, cfg.references)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not points:
        raise ConfigError("the sweep and the references are empty: nothing to run")
    return points


def task_jobs(cfg: FrontierConfig, name: str, points: list) -> List[dict]:
    """``evaluate.run_one``'s jobs of one task: every point on every seed."""
    from sageserve_env.tasks import task

    kwargs = task(name).env_kwargs()
    if cfg.horizon_s is not None:
        kwargs["horizon_s"] = cfg.horizon_s
    runs = Path(cfg.out) / "runs" / name
    return [{"policy": p.name, "policy_spec": dict(p.entry), "scenario": name, "seed": seed, "env_kwargs": kwargs,
             "out": str(runs / p.name / f"seed_{seed}"), "plots": False, "csv_records": False, "allow_empty": False}
            for p in points for seed in cfg.seeds]


def frontier(cfg: FrontierConfig, job: Job) -> int:
    """Run the sweep of ``cfg``, task by task, rewriting the tables and figures after each."""
    from evaluate import clear_runs, run_one
    from sageserve_env.cli import prepare_out_dir
    from sageserve_env.frontier import frontier_table
    from sageserve_env.launch import JobFailed, run_jobs
    from sageserve_env.plots import plot_frontier

    try:
        if job.output_dir is not None:
            cfg.out = job.output_dir
        points = check(cfg)
        out = Path(cfg.out)
        stale = [f"frontier_{t}.png" for t in cfg.tasks]
        prepare_out_dir(out, FRONTIER_FILES + tuple(stale), "out")
        clear_runs(out / "runs")
    except (ConfigError, OSError) as exc:
        print(f"frontier.py: error: {exc}", file=sys.stderr)
        return 2
    rows, timing = [], []
    for name in cfg.tasks:
        start = time.perf_counter()
        try:
            rows += run_jobs(run_one, task_jobs(cfg, name, points), "pool", cfg.workers, desc=name)
        except JobFailed as failed:
            text = " ".join(str(failed.error).split()) or "(no message)"
            print(f"frontier.py: error: episode {failed.job['policy']} on {name} seed {failed.job['seed']} failed: "
                  f"{type(failed.error).__name__}: {text}", file=sys.stderr)
            return 1
        timing.append({"task": name, "episodes": len(points) * len(cfg.seeds),
                       "wall_seconds": time.perf_counter() - start})
        episodes = pd.DataFrame(rows)
        episodes.to_csv(out / "episodes.csv", index=False)
        table = frontier_table(episodes, points)
        table.to_csv(out / "frontier.csv", index=False)
        pd.DataFrame(timing).to_csv(out / "timing.csv", index=False)
        plot_frontier(table, name, out / f"frontier_{name}.png")
        members = table[(table["task"] == name) & table["on_frontier"]]
        print(f"{name}: {timing[-1]['episodes']} episodes in {timing[-1]['wall_seconds']:.0f} s; frontier: "
              + "; ".join(f"{r.family} {r.knob}={r.value:g}" if r.knob else r.family for r in members.itertuples()))
    print(f"results in {out}/frontier.csv, episodes.csv and frontier_<task>.png")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``python scripts/frontier.py [Hydra overrides]``: the exit code (2: bad input, 1: an episode failed)."""
    return run_app("frontier", FrontierConfig, frontier, sys.argv[1:] if argv is None else argv, "frontier.py")


if __name__ == "__main__":
    sys.exit(main())
