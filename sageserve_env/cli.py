"""Command line: ``sageserve-env simulate|evaluate|train|presets`` (also ``python -m sageserve_env``).

The commands take Hydra's command line (``sageserve_env.app``). ``simulate`` replays a trace (or a
day generated from the config's ``workload`` section) with the initial allocation held fixed, or
with a scripted scaling schedule, then prints the summary and writes the run's outputs
(``outputs.write_run``). Library entry points:

- ``run_simulation(cfg, workload, out_dir, ...)``: simulate, summarize, write; returns the summary.
- ``finish_run(sim, wall_seconds, cfg, out_dir, ...)``: check, summarize and write any finished
  simulator, e.g. the one a policy drove through the Gymnasium env.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from omegaconf import MISSING
from tqdm import tqdm

from sageserve_env.app import Job
from sageserve_env.app import run as run_app
from sageserve_env.config import SCENARIO_DIR, ConfigError, SimConfig, load_config, preset_names
from sageserve_env.outputs import RUN_FILES, print_summary, write_run
from sageserve_env.sim.metrics import summarize
from sageserve_env.sim.simulator import Simulator
from sageserve_env.workload.generator import check_not_empty
from sageserve_env.workload.workload import Workload, WorkloadError

CHUNK_S = 300.0  # simulated seconds per run_until call (progress bar granularity)
SCHEDULE_COLUMNS = ("time_s", "region", "model", "delta")


class ScheduleError(ValueError):
    """A scaling schedule file cannot be read or names something the config does not have."""


@dataclass(frozen=True)
class ScheduledScale:
    """Ask endpoint (region, model) for ``delta`` instances at simulated time ``time_s``."""

    time_s: float
    region: str
    model: str
    delta: int


def read_schedule(path: Path | str, cfg: SimConfig) -> List[ScheduledScale]:
    """Read a CSV with columns time_s, region, model, delta; rows sorted by time (stable).

    Every error names the file and line: missing columns, a time that is not a number in
    [0, duration_s], an unknown region or model, a delta that is not a non-zero integer.
    """
    path = Path(path)
    if not path.is_file():
        raise ScheduleError(f"schedule file {str(path)!r} does not exist")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in SCHEDULE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ScheduleError(f"{path}: missing column(s) {missing}; expected {list(SCHEDULE_COLUMNS)}, "
                                f"found {reader.fieldnames}")
        rows = []
        for row in reader:
            where = f"{path}: line {reader.line_num}"
            try:
                t = float(row["time_s"])
            except (TypeError, ValueError):
                raise ScheduleError(f"{where}: time_s {row['time_s']!r} is not a number") from None
            if not (math.isfinite(t) and 0 <= t <= cfg.duration_s):
                raise ScheduleError(f"{where}: time_s {t:g} is outside [0, duration_s={cfg.duration_s:g}]")
            if row["region"] not in cfg.region_names:
                raise ScheduleError(f"{where}: unknown region {row['region']!r}; known: {cfg.region_names}")
            if row["model"] not in cfg.model_names:
                raise ScheduleError(f"{where}: unknown model {row['model']!r}; known: {cfg.model_names}")
            try:
                delta = int(row["delta"])
            except (TypeError, ValueError):
                raise ScheduleError(f"{where}: delta {row['delta']!r} is not an integer") from None
            if delta == 0:
                raise ScheduleError(f"{where}: delta is 0")
            rows.append(ScheduledScale(t, row["region"], row["model"], delta))
    return sorted(rows, key=lambda s: s.time_s)


def build_workload(cfg: SimConfig, seed: int) -> Workload:
    """The run's requests: a generated stretch of ``duration_s`` seeded with ``seed``, or the
    configured trace cut to [0, duration_s) (the rows cut off counted in
    ``meta['rows_outside_horizon']``)."""
    from sageserve_env.workload.generator import load_workload

    return load_workload(cfg, np.random.default_rng(seed), horizon_s=cfg.duration_s)


def prepare_out_dir(path: Path | str, files: Sequence[str] = RUN_FILES, what: str = "--out") -> List[str]:
    """Make ``path`` a writable output folder before any work, and remove the ``files`` an
    earlier run left in it (so no stale output sits beside the new ones). Returns the names
    removed; raises OSError naming ``what`` when the folder cannot be used."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OSError(f"{what} {str(out)!r} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise OSError(f"{what} {str(out)!r} is not a writable directory: {exc.strerror or exc}") from None
    removed = []
    for name in files:
        if (out / name).is_file():
            (out / name).unlink()
            removed.append(name)
    return removed


def simulate(cfg: SimConfig, workload: Workload, schedule: Sequence[ScheduledScale] = (),
             progress: bool = True, until_drained: bool = False) -> Tuple[Simulator, int]:
    """Run ``workload`` to ``cfg.duration_s``, applying ``schedule`` at its times (after the
    events at that instant); with ``until_drained``, stop instead at the first whole second
    after the last arrival (and the last scheduled change) at which no request is queued or in
    flight. Returns the simulator and the number of scheduled instance changes it refused (no
    spare server, ``min_instances``...)."""
    sim = Simulator(cfg, workload)
    end = cfg.duration_s
    last = max([workload.duration_s + cfg.routing.delay_s] + [s.time_s for s in schedule])
    stops = sorted({*np.arange(CHUNK_S, end, CHUNK_S).tolist(), end, *(s.time_s for s in schedule)})
    pending = deque(schedule)
    refused = 0
    with tqdm(total=end, unit="sim s", disable=not progress, leave=False, file=sys.stderr,
              bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} sim s [{elapsed}<{remaining}]") as bar:
        for t in [0.0, *stops]:
            if until_drained and t > last:
                break
            sim.run_until(t)
            while pending and pending[0].time_s <= t:
                s = pending.popleft()
                refused += sim.scale(s.region, s.model, s.delta).refused
            bar.update(t - bar.n)
        if until_drained:
            t = max(sim.now, math.floor(last))
            while t < end and (t < last or sim.queued() or sim.in_flight()):
                t = min(t + 1.0, end)
                sim.run_until(t)
                while pending and pending[0].time_s <= t:
                    s = pending.popleft()
                    refused += sim.scale(s.region, s.model, s.delta).refused
            bar.update(sim.now - bar.n)
    return sim, refused


def finish_run(sim: Simulator, wall_seconds: float, cfg: SimConfig, out_dir: Path | str, *,
               extra: Optional[Dict[str, Any]] = None, csv_records: bool = False,
               plots: bool = True) -> Dict[str, Any]:
    """Check invariants, summarize (plus the ``extra`` entries) and write the outputs."""
    sim.check_invariants()
    summary = summarize(sim, wall_seconds)
    summary.update(extra or {})
    write_run(out_dir, sim, summary, cfg, csv_records=csv_records, plots=plots)
    return summary


def run_simulation(cfg: SimConfig, workload: Workload, out_dir: Path | str, *,
                   schedule: Sequence[ScheduledScale] = (), csv_records: bool = False,
                   plots: bool = True, progress: bool = True, extra: Optional[Dict[str, Any]] = None,
                   until_drained: bool = False) -> Dict[str, Any]:
    """Simulate with a static allocation (or ``schedule``; to ``duration_s``, or with
    ``until_drained`` until the workload has drained), then ``finish_run`` (the summary gets
    the ``extra`` entries)."""
    start = time.perf_counter()
    sim, refused = simulate(cfg, workload, schedule, progress, until_drained)
    wall = time.perf_counter() - start
    extra = {**(extra or {}), **({"schedule_refused": refused} if schedule else {})}
    return finish_run(sim, wall, cfg, out_dir, extra=extra, csv_records=csv_records, plots=plots)


def check_policy(policy_spec: Any, cfg: SimConfig, name: Optional[str] = None) -> None:
    """Raise ValueError unless the policy (an ``agents.make_policy`` spec, called ``name``) can be
    built and act in the env of ``cfg`` (a learned agent's observation and action shapes must be
    the env's); before any simulation."""
    from agents import make_policy
    from agents.runner import make_env_for

    policy = make_policy(policy_spec, name)
    policy.check_env(make_env_for(policy, {"scenario": cfg, "horizon_s": cfg.duration_s}))


def run_policy(cfg: SimConfig, workload: Workload, policy_spec: Any, out_dir: Path | str, *,
               csv_records: bool = False, plots: bool = True, progress: bool = True,
               extra: Optional[Dict[str, Any]] = None, name: Optional[str] = None) -> Dict[str, Any]:
    """Let a policy (``agents.make_policy`` spec, called ``name``: default the spec) scale the
    endpoints through the env, then ``finish_run`` (the summary gets the ``extra`` entries)."""
    from agents import make_policy
    from agents.runner import make_env_for, run_episode

    name = name or str(policy_spec)
    policy = make_policy(policy_spec, name)
    env = make_env_for(policy, {"scenario": cfg, "horizon_s": cfg.duration_s})
    with tqdm(total=cfg.duration_s, unit="sim s", disable=not progress, leave=False, file=sys.stderr,
              bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} sim s [{elapsed}<{remaining}]") as bar:
        result = run_episode(env, policy, options={"workload": workload},
                             on_step=lambda t: bar.update(t - bar.n))
    extra = {**(extra or {}), "policy": name, "reward": result.reward, "decision_steps": result.steps,
             "policy_stats": result.policy_stats}
    return finish_run(result.env.sim, result.wall_seconds, cfg, out_dir, extra=extra,
                      csv_records=csv_records, plots=plots)


@dataclass
class SimulateConfig:
    """The options of ``simulate``; defaults in ``configs/commands/simulate.yaml``."""

    scenario: str = "paper"
    trace: Optional[str] = None
    trace_format: str = "canonical"
    duration_s: Optional[float] = None
    seed: int = 0
    out: str = MISSING
    csv: bool = False
    plots: bool = True
    schedule: Optional[str] = None
    policies: List[str] = field(default_factory=list)
    policy: Dict[str, Any] = field(default_factory=dict)  # alias -> {_target_: module:Class, knob: value...}
    sim_overrides: List[str] = field(default_factory=list)
    progress: bool = True
    allow_empty: bool = False


def _simulate(args: SimulateConfig, job: Job) -> int:
    """One ``simulate`` run (in a multirun, into the job's own folder)."""
    if job.output_dir is not None:
        args.out = job.output_dir
    overrides = list(args.sim_overrides)
    if args.trace:
        overrides += ["workload.source=trace", f"workload.trace={json.dumps(args.trace)}",
                      f"workload.trace_format={args.trace_format}"]
    if args.duration_s is not None:
        overrides.append(f"duration_s={args.duration_s}")
    trace_span = bool(args.trace) and args.duration_s is None  # the run lasts as long as the trace
    created = not Path(args.out).exists()
    policy = None
    try:
        if args.seed < 0:
            raise ConfigError(f"seed {args.seed}: must be >= 0")
        if len(args.policies) > 1:
            raise ConfigError(f"policies {args.policies}: simulate runs one policy (evaluate.py compares several)")
        cfg = load_config(args.scenario, overrides)
        schedule = read_schedule(args.schedule, cfg) if args.schedule else ()
        if args.policies:
            name = args.policies[0]
            policy = (name, args.policy.get(name, name))
            if schedule:
                raise ConfigError("policies and schedule exclude each other")
            check_policy(policy[1], cfg, name)
        removed = prepare_out_dir(args.out, what="out")
        if trace_span:
            cfg = _trace_length(cfg, policy is not None)
        workload = build_workload(cfg, args.seed)
        if not args.allow_empty:
            check_not_empty(workload, cfg.duration_s, "allow_empty=true")
    except (ConfigError, ScheduleError, WorkloadError, OSError, ValueError) as exc:
        if created and Path(args.out).is_dir() and not any(Path(args.out).iterdir()):
            Path(args.out).rmdir()  # leave no empty folder behind a run that never started
        print(f"simulate: error: {exc}", file=sys.stderr)
        return 2
    if removed:
        print(f"note: removed {len(removed)} file(s) of an earlier run from {args.out}: {', '.join(removed)}",
              file=sys.stderr)
    outside = workload.meta.get("rows_outside_horizon", 0)
    if outside:
        print(f"note: {outside:,} of {workload.meta['rows_read']:,} trace rows arrive at or after "
              f"duration_s={cfg.duration_s:g} s and are not replayed (summary: trace_rows_outside_horizon)",
              file=sys.stderr)
    print(f"{cfg.name}: {len(workload):,} requests over {cfg.duration_s:g} s, "
          f"{len(cfg.regions)} region(s) x {len(cfg.models)} model(s)", file=sys.stderr)
    extra = {"trace_rows_outside_horizon": outside} if cfg.workload.source == "trace" else {}
    if policy is not None:
        summary = run_policy(cfg, workload, policy[1], args.out, csv_records=args.csv, plots=args.plots,
                             progress=args.progress, extra=extra, name=policy[0])
    else:
        summary = run_simulation(cfg, workload, args.out, schedule=schedule, csv_records=args.csv,
                                 plots=args.plots, progress=args.progress, extra=extra,
                                 until_drained=trace_span)
    if trace_span:
        print(f"note: the trace's span: billed over [0, {summary['sim_seconds']:g}) s "
              f"({'its last arrival' if policy else 'until its last request left'}; duration_s= sets another)",
              file=sys.stderr)
    print_summary(summary)
    print(f"outputs in {args.out}")
    return 0


def _trace_length(cfg: SimConfig, policy: bool) -> SimConfig:
    """``cfg`` with ``duration_s`` spanning the whole trace: to its last arrival (rounded up to a
    minute) for a policy's episode, else to the last arrival plus ``niw.deadline_s``, a bound
    the run stops short of once the trace has drained."""
    from sageserve_env.workload.readers import load_trace

    last = load_trace(cfg.workload.trace, cfg.workload.trace_format, cfg).duration_s + cfg.routing.delay_s
    span = 60.0 * math.ceil(last / 60.0 + 1e-9) if policy else last + cfg.niw.deadline_s
    return load_config(cfg, [f"duration_s={max(span, 60.0)}"])


def _preset_description(name: str) -> str:
    """The first comment line of a preset's YAML file."""
    for line in (SCENARIO_DIR / f"{name}.yaml").read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


USAGE = """usage: sageserve-env COMMAND [Hydra overrides]   (python -m sageserve_env COMMAND ...)

commands:
  simulate   replay a trace or a generated day; write summary, records, plots (configs/commands/simulate.yaml)
  evaluate   compare policies on scenarios and seeds (evaluate.py; configs/commands/evaluate.yaml)
  train      train an RL autoscaler (train.py; configs/commands/train.yaml)
  presets    list the scenario presets

Every command takes Hydra's command line: key=value overrides, -m for a multirun, --cfg job to
print the resolved config, --help for its options."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m sageserve_env`` and the ``sageserve-env`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command == "simulate":
        return run_app("simulate", SimulateConfig, _simulate, rest, "sageserve-env simulate")
    if command in ("evaluate", "train"):
        module = importlib.import_module(command)
        return module.main(rest)
    if command == "presets" and not rest:
        for name in preset_names():
            print(f"{name:<18} {_preset_description(name)}")
        return 0
    print(USAGE, file=sys.stderr if command not in ("-h", "--help") else sys.stdout)
    return 0 if command in ("-h", "--help") else 2
