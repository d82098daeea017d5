"""Command line: ``python -m sageserve_env simulate ...`` and ``python -m sageserve_env presets``.

``simulate`` replays a trace (or a day generated from the config's ``workload`` section) with
the initial allocation held fixed, or with a scripted scaling schedule, then prints the summary
and writes the run's outputs (``outputs.write_run``). Library entry points:

- ``run_simulation(cfg, workload, out_dir, ...)``: simulate, summarize, write; returns the summary.
- ``finish_run(sim, wall_seconds, cfg, out_dir, ...)``: check, summarize and write any finished
  simulator, e.g. the one a policy drove through the Gymnasium env.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

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


def check_policy(policy_spec: str, cfg: SimConfig) -> None:
    """Raise ValueError unless the policy can be built and act in the env of ``cfg`` (a learned
    agent's observation and action shapes must be the env's); before any simulation."""
    from agents import check_policy_spec, make_policy
    from agents.learned import LearnedPolicy
    from agents.runner import make_env_for

    check_policy_spec(policy_spec)
    policy = make_policy(policy_spec)
    if isinstance(policy, LearnedPolicy):
        policy.check_env(make_env_for(policy, {"scenario": cfg, "horizon_s": cfg.duration_s}))


def run_policy(cfg: SimConfig, workload: Workload, policy_spec: str, out_dir: Path | str, *,
               csv_records: bool = False, plots: bool = True, progress: bool = True,
               extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Let a policy (``agents.make_policy`` spec) scale the endpoints through the env, then
    ``finish_run`` (the summary gets the ``extra`` entries)."""
    from agents import make_policy
    from agents.runner import make_env_for, run_episode

    policy = make_policy(policy_spec)
    env = make_env_for(policy, {"scenario": cfg, "horizon_s": cfg.duration_s})
    with tqdm(total=cfg.duration_s, unit="sim s", disable=not progress, leave=False, file=sys.stderr,
              bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} sim s [{elapsed}<{remaining}]") as bar:
        result = run_episode(env, policy, options={"workload": workload},
                             on_step=lambda t: bar.update(t - bar.n))
    extra = {**(extra or {}), "policy": policy_spec, "reward": result.reward, "decision_steps": result.steps,
             "policy_stats": result.policy_stats}
    return finish_run(result.env.sim, result.wall_seconds, cfg, out_dir, extra=extra,
                      csv_records=csv_records, plots=plots)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sageserve_env",
                                     description="Multi-region LLM serving simulator after SageServe.")
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="replay a trace or a generated day; write summary, records, plots",
                         description="Replay a trace (or a generated day) with the initial allocation held "
                                     "fixed or a scripted scaling schedule.")
    sim.add_argument("--config", default="paper", help="scenario preset name or YAML path (default: paper)")
    sim.add_argument("--trace", help="trace file to replay (default: generate from the config's workload)")
    sim.add_argument("--trace-format", choices=("sageserve", "azure", "canonical"), default="canonical")
    sim.add_argument("--duration", type=float, help="simulated seconds (overrides duration_s)")
    sim.add_argument("--seed", type=int, default=0, help="seed of the generated workload (default: 0)")
    sim.add_argument("--out", required=True, help="output directory")
    sim.add_argument("--csv", action="store_true", help="also write requests.csv")
    sim.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    sim.add_argument("--schedule", help="CSV of scaling changes: time_s,region,model,delta")
    sim.add_argument("--policy", help="let a policy scale the endpoints (static, reactive, lt_ua, oracle, rl, "
                                      "ckpt:PATH, ...) instead of a fixed allocation or schedule")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.add_argument("--allow-empty", action="store_true",
                     help="run even when no request arrives before the end (an error otherwise)")
    sim.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. scaling.level=1")
    sub.add_parser("presets", help="list the scenario presets")
    return parser


def _simulate(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.trace:
        overrides += ["workload.source=trace", f"workload.trace={json.dumps(args.trace)}",
                      f"workload.trace_format={args.trace_format}"]
    if args.duration is not None:
        overrides.append(f"duration_s={args.duration}")
    trace_span = bool(args.trace) and args.duration is None  # the run lasts as long as the trace
    created = not Path(args.out).exists()
    try:
        if args.seed < 0:
            raise ConfigError(f"--seed {args.seed}: must be >= 0")
        cfg = load_config(args.config, overrides)
        schedule = read_schedule(args.schedule, cfg) if args.schedule else ()
        if args.policy:
            if schedule:
                raise ConfigError("--policy and --schedule exclude each other")
            check_policy(args.policy, cfg)
        removed = prepare_out_dir(args.out)
        if trace_span:
            cfg = _trace_length(cfg, args.policy is not None)
        workload = build_workload(cfg, args.seed)
        if not args.allow_empty:
            check_not_empty(workload, cfg.duration_s, "--allow-empty")
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
    if args.policy:
        summary = run_policy(cfg, workload, args.policy, args.out, csv_records=args.csv,
                             plots=not args.no_plots, progress=not args.quiet, extra=extra)
    else:
        summary = run_simulation(cfg, workload, args.out, schedule=schedule, csv_records=args.csv,
                                 plots=not args.no_plots, progress=not args.quiet, extra=extra,
                                 until_drained=trace_span)
    if trace_span:
        print(f"note: the trace's span: billed over [0, {summary['sim_seconds']:g}) s "
              f"({'its last arrival' if args.policy else 'until its last request left'}; --duration sets another)",
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m sageserve_env`` and the ``sageserve-env`` script."""
    args = _parser().parse_args(argv)
    if args.command == "presets":
        for name in preset_names():
            print(f"{name:<18} {_preset_description(name)}")
        return 0
    return _simulate(args)
