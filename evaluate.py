"""Compare autoscaling policies on scenarios and held-out seeds; the project's main job.

    python evaluate.py                                   # the default comparison (configs/commands/evaluate.yaml)
    python evaluate.py policies=[reactive,lt_ua] scenario=paper seeds=[1001,1002] out=results/run1
    python evaluate.py policies=[reactive,my_pkg.autoscaler:MyPolicy] policy.reactive.up_threshold=0.6
    python evaluate.py -m policies=[reactive] policy.reactive.up_threshold=0.4,0.6   # a sweep: one folder a job
    python evaluate.py trace=traces/sample_small.csv trace_format=canonical scenario=small
    python evaluate.py policies=[reactive,ckpt:logs/maskable_ppo/run_1/best_model.zip] scenario=small
    python evaluate.py suite=v1                          # the benchmark: every baseline, every task's test seeds
    python evaluate.py suite=v1 seeds=[20000] tasks=[Burst-v1] policies=[lt_i,lt_ua,reactive,oracle]
    python evaluate.py launcher=ray ray.address=auto     # the episodes as Ray tasks on a cluster

The command line is Hydra's (``sageserve_env.app``): ``key=value`` overrides of ``EvalConfig``
over ``configs/commands/evaluate.yaml`` (``sageserve_env/configs``), ``-m`` for a multirun (each job
writes ``out/<its overrides>/``), ``--cfg job`` to print the config. A policy
is an alias of the ``policy`` table (the registry's, with every knob), ``rl``, ``ckpt:PATH`` or
``module:Class`` (any importable ``agents.base.Policy``); ``+policy.NAME={_target_: module:Class,
knob: value}`` adds an entry with knobs.

Each (policy, scenario, seed) episode runs in its own process (``launcher=pool``: ``workers``
processes here; ``launcher=ray``: Ray tasks, ``docs/scale_out.md``) and writes the outputs of the
``simulate`` command under ``out/runs/<scenario>/<policy>/seed_<n>/``. The matrix is summarized in
``out/results.csv`` and ``out/results.md`` (means with bootstrap 95% intervals, and a normalized
score: 0 = ``reactive``, 1 = ``oracle``), ``out/episodes.csv`` and plots.

With ``suite=v1`` the matrix is the v1 tasks (``sageserve_env.tasks``; ``tasks=[...]`` picks
some) on their test seeds (``seeds=[...]`` overrides) with the baselines of ``SUITE_POLICIES``
(``policies=[...]`` overrides); ``results.csv``/``results.md`` have one row per (task, policy)
with the episode-wise normalized score (0 = that seed's ``reactive``, 1 = its ``oracle``), and
``aggregates.csv``/``aggregates.md`` the IQM over tasks and the probability of improving on
``reactive``, with stratified bootstrap intervals (``sageserve_env.aggregate``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: parallel workers, one BLAS thread each

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from sageserve_env.app import Job, compose
from sageserve_env.app import run as run_app
from sageserve_env.config import ConfigError
from sageserve_env.launch import JobFailed, RayConfig, check_launcher, run_jobs

TABLE_METRICS = ("billed_gpu_hours", "iw_slo_attainment", "iw_ttft_p90", "iw_e2e_p90", "niw_deadline_misses", "reward")
SUITE_METRICS = ("billed_gpu_hours", "iw_slo_attainment", "iw_ttft_p99", "iw_ttft_p90", "scale_ups", "scale_downs",
                 "reward")
SUITE_POLICIES = ["reactive", "lt_i", "lt_u", "lt_ua", "chiron", "oracle"]


@dataclass
class EvalConfig:
    """The evaluation matrix; defaults in ``configs/commands/evaluate.yaml``."""

    policies: List[str] = field(default_factory=list)
    policy: Dict[str, Any] = field(default_factory=dict)  # alias -> {_target_: module:Class, knob: value...}
    scenarios: List[str] = field(default_factory=list)
    scenario: Optional[str] = None  # short for scenarios=[X]
    seeds: List[int] = field(default_factory=list)
    trace: Optional[str] = None
    trace_format: str = "canonical"
    horizon_s: Optional[float] = None
    fidelity: str = "detailed"
    reward: Any = "balanced"  # a preset name or its weights (the `reward` group: reward=slo reward.drop=2)
    sim_overrides: List[str] = field(default_factory=list)
    out: str = "results/default"
    workers: int = 2
    launcher: str = "pool"  # pool: processes on this machine; ray: Ray tasks (sageserve_env.launch)
    ray: RayConfig = field(default_factory=RayConfig)
    bootstrap: int = 1000
    plots: bool = True
    csv_records: bool = False
    allow_empty: bool = False
    suite: Optional[str] = None  # v1: the benchmark tasks instead of scenarios
    tasks: List[str] = field(default_factory=list)  # with suite: a subset of its task IDs


EVAL_FILES = ("episodes.csv", "results.csv", "results.md", "evaluate_config.yaml", "timing.json", "cost_vs_slo.png",
              "aggregates.csv", "aggregates.md")


def parse_args(argv: List[str]) -> EvalConfig:
    """Defaults, then Hydra overrides, checked (``check_config``)."""
    cfg, job = compose("evaluate", EvalConfig, argv)
    return check_config(cfg, job.given)


def check_config(cfg: EvalConfig, given: frozenset) -> EvalConfig:
    """Check the options and resolve the shorthands (``given``: the keys set on the command line)."""
    if cfg.scenario is not None:
        if "scenarios" in given:
            raise ConfigError("scenario and scenarios exclude each other (scenario=X is short for scenarios=[X])")
        cfg.scenarios = [cfg.scenario]
    if cfg.suite is not None:
        from sageserve_env.tasks import tasks

        if cfg.suite == "v1-vec":
            raise ConfigError("suite: v1-vec is the tasks' training fidelity (many worlds, no env.view() for the "
                              "baselines); evaluate on suite=v1 (or v1-fast), whose spaces are the same")
        try:
            known = tasks(cfg.suite)
        except ValueError as exc:
            raise ConfigError(f"suite: {exc}") from None
        unknown = [t for t in cfg.tasks if t not in known]
        if unknown:
            raise ConfigError(f"tasks: unknown task(s) {unknown} in suite {cfg.suite!r}; known: {sorted(known)}")
        if {"scenario", "scenarios", "trace", "horizon_s", "fidelity", "reward", "sim_overrides"} & given:
            raise ConfigError("suite: a task fixes scenario, trace, horizon_s, fidelity, reward and sim_overrides; "
                              "drop those options (or evaluate scenarios without suite=)")
        cfg.scenarios = list(cfg.tasks or known)
        if "policies" not in given:
            cfg.policies = list(SUITE_POLICIES)
        if "seeds" not in given:
            cfg.seeds = []  # each task's test seeds
    elif cfg.tasks:
        raise ConfigError("tasks=[...] needs suite=v1")
    if not cfg.policies or not cfg.scenarios or (not cfg.seeds and cfg.suite is None):
        raise ConfigError("policies, scenarios and seeds must each name at least one entry")
    if cfg.fidelity not in ("detailed", "fast"):
        raise ConfigError(f"fidelity must be detailed or fast, got {cfg.fidelity!r}")
    if cfg.workers < 1:
        raise ConfigError(f"workers must be >= 1, got {cfg.workers}")
    check_launcher(cfg.launcher, cfg.ray)
    bad = [s for s in cfg.seeds if s < 0]
    if bad:
        raise ConfigError(f"seeds must be >= 0, got {bad[0]}")
    for what, values in (("seeds", cfg.seeds), ("policies", cfg.policies), ("scenarios", cfg.scenarios)):
        repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
        if repeated:
            raise ConfigError(f"{what} lists {repeated} more than once (each episode would count twice "
                              "and share a run folder)")
    if cfg.horizon_s is not None and not (math.isfinite(cfg.horizon_s) and cfg.horizon_s > 0):
        raise ConfigError(f"horizon_s must be a finite number of seconds > 0 (or null: the scenario's "
                          f"duration_s), got {cfg.horizon_s}")
    if cfg.bootstrap < 1:
        raise ConfigError(f"bootstrap must be >= 1 resample, got {cfg.bootstrap}")
    return cfg


def env_kwargs(cfg: EvalConfig, scenario: str) -> Dict[str, Any]:
    """The SageServeEnv keywords of one scenario (or task, with ``suite``) of the matrix."""
    if cfg.suite is not None:
        from sageserve_env.tasks import task

        return task(scenario).env_kwargs()
    overrides = list(cfg.sim_overrides)
    if cfg.trace:
        overrides += ["workload.source=trace", f"workload.trace={cfg.trace}", f"workload.trace_format={cfg.trace_format}"]
    kwargs: Dict[str, Any] = {"scenario": scenario, "sim_overrides": overrides, "reward": cfg.reward,
                              "fidelity": cfg.fidelity, "trace_window": "start"}
    if cfg.horizon_s is not None:
        kwargs["horizon_s"] = cfg.horizon_s
    return kwargs


def policy_spec(cfg: EvalConfig, name: str) -> Any:
    """What ``make_policy`` builds for the policy ``name`` of the matrix: its entry in the
    ``policy`` table (knobs as configured), else the name itself (``rl``, ``ckpt:PATH``,
    ``module:Class``)."""
    return cfg.policy.get(name, name)


def seeds_of(cfg: EvalConfig, scenario: str) -> List[int]:
    """The seeds of one scenario: ``seeds``, or with ``suite`` and no ``seeds`` the task's test seeds."""
    if cfg.suite is not None and not cfg.seeds:
        from sageserve_env.tasks import task

        return list(task(scenario).seeds.seeds("test"))
    return list(cfg.seeds)


def check_matrix(cfg: EvalConfig) -> List[str]:
    """Everything that can be checked before a worker starts: policies, scenarios and options,
    each policy against each scenario's env (``Policy.check_env``), and a trace's episodes (requests within the
    horizon). Returns notes to print (trace rows past the horizon); raises on errors."""
    from agents import check_policy_spec, make_policy
    from agents.runner import make_env_for
    from sageserve_env.env.sageserve_env import SageServeEnv
    from sageserve_env.workload.generator import check_not_empty
    from sageserve_env.workload.readers import load_trace

    for name in cfg.policies:
        check_policy_spec(policy_spec(cfg, name), name)
    policies = {name: make_policy(policy_spec(cfg, name), name) for name in cfg.policies}
    notes = []
    for scenario in cfg.scenarios:
        try:
            env = SageServeEnv(**env_kwargs(cfg, scenario))  # validates scenario, overrides and trace options
        except (ConfigError, ValueError) as exc:
            raise ConfigError(f"scenario {scenario!r}: {exc}") from None
        for spec, policy in policies.items():
            try:
                policy.check_env(make_env_for(policy, env_kwargs(cfg, scenario)))
            except ValueError as exc:
                raise ConfigError(f"policy {spec!r} on scenario {scenario!r}: {exc}") from None
        sim_cfg = env.sim_config
        if sim_cfg.workload.source == "trace":
            trace = load_trace(sim_cfg.workload.trace, sim_cfg.workload.trace_format, sim_cfg)
            window = trace.slice_time(0.0, env.horizon)
            window.meta["rows_outside_horizon"] = len(trace) - len(window)
            if not cfg.allow_empty:
                check_not_empty(window, env.horizon, "allow_empty=true")
            if len(window) < len(trace):
                notes.append(f"scenario {scenario!r}: {len(trace) - len(window):,} of {len(trace):,} trace rows "
                             f"arrive at or after the horizon ({env.horizon:g} s) and are not replayed")
    return notes


def run_one(job: Dict[str, Any]) -> Dict[str, Any]:
    """One episode in a worker process: run, summarize, write the run's outputs."""
    from agents import make_policy
    from agents.runner import make_env_for, run_episode
    from sageserve_env.cli import finish_run

    policy = make_policy(job["policy_spec"], job["policy"])
    env = make_env_for(policy, job["env_kwargs"])
    result = run_episode(env, policy, seed=job["seed"])
    if result.env.sim.n_requests == 0 and not job["allow_empty"]:
        raise ValueError(f"the episode has 0 requests in [0, {result.env.horizon:g}) s; pass allow_empty=true "
                         "to score it anyway")
    extra = {"reward": result.reward, "decision_steps": result.steps, "policy_stats": result.policy_stats}
    summary = finish_run(result.env.sim, result.wall_seconds, result.env.sim_config, job["out"], extra=extra,
                         csv_records=job["csv_records"], plots=job["plots"])
    row = {k: v for k, v in summary.items() if isinstance(v, (int, float, str)) or v is None}
    row.update(policy=job["policy"], scenario=job["scenario"], seed=job["seed"], run_dir=job["out"])
    row.update({f"policy_{k}": v for k, v in result.policy_stats.items() if isinstance(v, (int, float))})
    return row


def clear_runs(runs: Path) -> int:
    """Remove the run files (``RUN_FILES``) an earlier evaluation left under ``runs/`` and the
    folders they leave empty; anything else stays. Returns the number of files removed."""
    from sageserve_env.outputs import RUN_FILES

    if not runs.is_dir():
        return 0
    removed = 0
    for path in sorted(runs.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file() and path.name in RUN_FILES:
            path.unlink()
            removed += 1
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    if not any(runs.iterdir()):
        runs.rmdir()
    return removed


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator, n: int) -> tuple:
    """95% percentile interval of the mean (the mean itself when there is one value)."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan, math.nan
    if len(values) == 1 or n <= 0:
        mean = float(values.mean())
        return mean, mean
    means = rng.choice(values, size=(n, len(values)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def results_table(episodes: pd.DataFrame, n_boot: int) -> pd.DataFrame:
    """One row per (policy, scenario): means, intervals and the normalized score."""
    rng = np.random.default_rng(0)
    rows = []
    for (policy, scenario), group in episodes.groupby(["policy", "scenario"], sort=False):
        row: Dict[str, Any] = {"policy": policy, "scenario": scenario, "episodes": len(group)}
        for metric in TABLE_METRICS:
            values = pd.to_numeric(group[metric], errors="coerce").to_numpy(dtype=float)
            row[metric] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = bootstrap_ci(values, rng, n_boot)
        rows.append(row)
    table = pd.DataFrame(rows)
    table["normalized_score"] = math.nan
    for scenario, group in table.groupby("scenario"):
        ref = group.set_index("policy")["reward"]
        if "reactive" in ref and "oracle" in ref and ref["oracle"] != ref["reactive"]:
            score = (group["reward"] - ref["reactive"]) / (ref["oracle"] - ref["reactive"])
            table.loc[group.index, "normalized_score"] = score
    return table


def markdown(table: pd.DataFrame, cols=("policy", "scenario", "episodes", *TABLE_METRICS, "normalized_score")) -> str:
    """The ``cols`` of a results table as GitHub Markdown; a value with a ``<col>_ci_low`` /
    ``_ci_high`` interval over more than one episode shows it in brackets."""
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, float):
                text = "" if math.isnan(v) else f"{v:.4g}"
                if c != "episodes" and row["episodes"] > 1 and np.isfinite(row.get(f"{c}_ci_low", math.nan)):
                    text += f" [{row[f'{c}_ci_low']:.4g}, {row[f'{c}_ci_high']:.4g}]"
                cells.append(text)
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def episode_scores(episodes: pd.DataFrame) -> pd.Series:
    """Each episode's normalized score: 0 = ``reactive``'s reward on the same task and seed, 1 =
    ``oracle``'s (NaN where either is missing or they are equal)."""
    reward = pd.to_numeric(episodes["reward"], errors="coerce")
    keys = list(zip(episodes["task"], episodes["seed"]))
    lo = np.array([_first(episodes, reward, k, "reactive") for k in keys])
    hi = np.array([_first(episodes, reward, k, "oracle") for k in keys])
    span = hi - lo
    with np.errstate(all="ignore"):
        score = np.where(np.isfinite(span) & (span != 0), (reward.to_numpy() - lo) / span, math.nan)
    return pd.Series(score, index=episodes.index)


def _first(episodes: pd.DataFrame, reward: pd.Series, key, policy: str) -> float:
    hit = (episodes["task"] == key[0]) & (episodes["seed"] == key[1]) & (episodes["policy"] == policy)
    return float(reward[hit].iloc[0]) if hit.any() else math.nan


def suite_table(episodes: pd.DataFrame, n_boot: int) -> pd.DataFrame:
    """One row per (task, policy): means of ``SUITE_METRICS`` and the normalized score, with
    bootstrap 95% intervals over the episodes."""
    rng = np.random.default_rng(0)
    rows = []
    for (t, policy), group in episodes.groupby(["task", "policy"], sort=False):
        row: Dict[str, Any] = {"task": t, "policy": policy, "episodes": len(group)}
        for metric in SUITE_METRICS + ("normalized_score",):
            values = pd.to_numeric(group[metric], errors="coerce").to_numpy(dtype=float)
            row[metric] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = bootstrap_ci(values, rng, n_boot)
        rows.append(row)
    return pd.DataFrame(rows)


def suite_markdown(table: pd.DataFrame) -> str:
    """The suite's results table (one row per task and policy) as GitHub Markdown."""
    return markdown(table, ("task", "policy", "episodes", *SUITE_METRICS, "normalized_score"))


def suite_aggregates(episodes: pd.DataFrame, n_boot: int, reference: str = "reactive") -> pd.DataFrame:
    """IQM of the normalized score over tasks and P(policy > ``reference``), stratified bootstrap."""
    from sageserve_env.aggregate import aggregates

    tasks = list(dict.fromkeys(episodes["task"]))
    scores = {}
    for policy in dict.fromkeys(episodes["policy"]):
        per_task = []
        for t in tasks:
            x = episodes.loc[(episodes["task"] == t) & (episodes["policy"] == policy), "normalized_score"]
            x = x.to_numpy(dtype=float)
            per_task.append(x[np.isfinite(x)])
        if all(len(x) for x in per_task):
            scores[policy] = per_task
    return pd.DataFrame(aggregates(scores, reference, n_boot))


def write_suite(out: Path, episodes: pd.DataFrame, n_boot: int, reference: str = "reactive") -> pd.DataFrame:
    """A suite's files in ``out`` from its episodes (one row per task, policy and seed):
    ``episodes.csv`` with the normalized scores, ``results.csv``/``.md``, ``aggregates.csv``/``.md``
    (the probability of improvement over ``reference``)."""
    episodes = episodes.copy()
    episodes["normalized_score"] = episode_scores(episodes)
    episodes.to_csv(out / "episodes.csv", index=False)
    table = suite_table(episodes, n_boot)
    agg = suite_aggregates(episodes, n_boot, reference)
    agg.to_csv(out / "aggregates.csv", index=False)
    (out / "aggregates.md").write_text(aggregates_markdown(agg, reference))
    table.to_csv(out / "results.csv", index=False)
    (out / "results.md").write_text(suite_markdown(table) + "\n" + aggregates_markdown(agg, reference))
    return episodes


def aggregates_markdown(agg: pd.DataFrame, reference: str = "reactive") -> str:
    if agg.empty:
        return "No aggregate: normalized scores need reactive and oracle on every task.\n"
    lines = [f"| policy | tasks | episodes | IQM normalized score [95% CI] | P(better than {reference}) [95% CI] |",
             "|---|---|---|---|---|"]
    for _, r in agg.iterrows():
        p = r[f"p_improve_over_{reference}"]
        ptext = "" if math.isnan(p) else f"{p:.2f} [{r['p_improve_ci_low']:.2f}, {r['p_improve_ci_high']:.2f}]"
        lines.append(f"| {r['policy']} | {r['tasks']} | {r['episodes']} | {r['iqm']:.3f} "
                     f"[{r['iqm_ci_low']:.3f}, {r['iqm_ci_high']:.3f}] | {ptext} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    """``python evaluate.py [Hydra overrides]``: the exit code (2: bad input, 1: an episode failed)."""
    return run_app("evaluate", EvalConfig, evaluate, sys.argv[1:] if argv is None else argv, "evaluate.py")


def evaluate(cfg: EvalConfig, job: Job) -> int:
    """Run the evaluation matrix of ``cfg`` (in a multirun, into the job's own folder)."""
    from sageserve_env.cli import prepare_out_dir

    try:
        cfg = check_config(cfg, job.given)
        if job.output_dir is not None:
            cfg.out = job.output_dir
        from agents import SHIPPED_AGENTS, shipped_agent_path

        for name in SHIPPED_AGENTS:
            if name in cfg.policies and not shipped_agent_path(name).exists():
                print(f"evaluate.py: note: no trained agent at {shipped_agent_path(name)}; skipping policy {name!r}",
                      file=sys.stderr)
                cfg.policies = [p for p in cfg.policies if p != name]
        notes = check_matrix(cfg)  # fail before any episode runs
        out = Path(cfg.out)
        jobs = [{"policy": p, "policy_spec": policy_spec(cfg, p), "scenario": s, "seed": seed,
                 "env_kwargs": env_kwargs(cfg, s),
                 "out": str(out / "runs" / Path(s).stem / p.replace(":", "_").replace("/", "_") / f"seed_{seed}"),
                 "plots": cfg.plots, "csv_records": cfg.csv_records, "allow_empty": cfg.allow_empty}
                for s in cfg.scenarios for p in cfg.policies for seed in seeds_of(cfg, s)]
        if len({job["out"] for job in jobs}) < len(jobs):
            raise ConfigError("two policies or scenarios map to the same run folder under out/runs; rename one")
        removed = len(prepare_out_dir(out, EVAL_FILES, "out")) + clear_runs(out / "runs")
    except (ConfigError, ValueError, OSError) as exc:
        print(f"evaluate.py: error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"evaluate.py: note: {note}", file=sys.stderr)
    if removed:
        print(f"evaluate.py: note: removed {removed} file(s) of an earlier evaluation from {out}", file=sys.stderr)
    start = time.perf_counter()
    try:
        rows = run_jobs(run_one, jobs, cfg.launcher, cfg.workers, cfg.ray, desc="episodes")
    except JobFailed as failed:  # a worker's failure, whatever it raised
        job, exc = failed.job, failed.error
        text = " ".join(str(exc).split()) or "(no message)"
        print(f"evaluate.py: error: episode policy={job['policy']} scenario={job['scenario']} "
              f"seed={job['seed']} failed: {type(exc).__name__}: {text}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - start
    episodes = pd.DataFrame(rows)
    episodes.to_csv(out / "episodes.csv", index=False)
    if cfg.suite is not None:
        episodes = write_suite(out, episodes.rename(columns={"scenario": "task"}), cfg.bootstrap)
        episodes = episodes.rename(columns={"task": "scenario"})  # for the plots
    else:
        table = results_table(episodes, cfg.bootstrap)
        table.to_csv(out / "results.csv", index=False)
        (out / "results.md").write_text(markdown(table))
    (out / "evaluate_config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    if cfg.plots:
        from sageserve_env.plots import plot_matrix

        plot_matrix(episodes, out)
    print((out / "results.md").read_text())
    print(f"{len(jobs)} episodes in {wall:.1f} s; results in {out}/results.csv, results.md and plots")
    (out / "timing.json").write_text(json.dumps({"wall_seconds": wall, "episodes": len(jobs)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
