"""Benchmark: replay a SageServe-format trace end to end, as ``simulate trace=...`` does, phase by phase.

    python bench/bench_replay_trace.py [--trace PATH] [--copies K] [--requests N] [--config NAME]

The phases are those of ``sageserve-env simulate trace=PATH trace_format=sageserve``
(its functions, called in the same order): load (config, the trace's span, the workload), simulation
(static allocation until the trace has drained), summary and outputs (invariants, ``summarize``,
``write_run`` without plots), the three plots, and the total.

By default the trace is 149,444 requests built from the shared one-hour trace
(``../shared/data/sageserve_small/SMALL.csv``, 19,583 requests): ``--copies`` 8 superposed copies,
each one's arrivals shifted by a seeded jitter in [0, 1) s and its batch ids renumbered, cut to the
first ``--requests`` rows of a seeded shuffle of the last copy; the original simulator took 73 s
on a 149,444-request SageServe trace (the ratio printed is against that). ``--copies 1`` replays
the shared trace itself (the original's runs of it, with its arbiters, took 11 to 12 s:
``wall_s`` in ``original_results.json``). Target: at least 25 times faster than 73 s end to end,
plots included (under 2.92 s). CPU seconds are printed beside wall seconds: on a loaded machine
the wall figure grows with the load average, printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sageserve_env.cli import _trace_length, build_workload, simulate
from sageserve_env.config import load_config
from sageserve_env.outputs import write_run
from sageserve_env.plots import plot_gpu_hours, plot_instances_vs_load, plot_latency_cdfs
from sageserve_env.sim.metrics import summarize

SHARED_TRACE = Path(__file__).resolve().parents[2] / "shared" / "data" / "sageserve_small" / "SMALL.csv"
ORIGINAL_WALL_S = 73.0  # the original simulator on a 149,444-request SageServe trace
ORIGINAL_REQUESTS = 149_444
TARGET_SPEEDUP = 25.0


def superposed_trace(source: Path, copies: int, requests: int, seed: int, out: Path) -> Path:
    """``copies`` copies of the SageServe trace ``source`` superposed (jittered arrivals, batch ids
    and request ids renumbered, sorted by arrival), the last copy cut so that ``requests`` rows
    remain; written to ``out``."""
    base = pd.read_csv(source)
    rng = np.random.default_rng(seed)
    parts = []
    n_batches = int(base["batch_id"].max()) + 1
    for k in range(copies):
        part = base.copy()
        if k:
            part["arrival_timestamp"] = part["arrival_timestamp"] + rng.random(len(part))
            part.loc[part["batch_id"] >= 0, "batch_id"] += k * n_batches
        parts.append(part)
    keep = requests - (copies - 1) * len(base)
    if not 0 < keep <= len(base):
        raise SystemExit(f"--requests {requests}: need between {(copies - 1) * len(base) + 1} and "
                         f"{copies * len(base)} for {copies} copies of {len(base)} rows")
    parts[-1] = parts[-1].iloc[np.sort(rng.permutation(len(base))[:keep])]
    trace = pd.concat(parts, ignore_index=True).sort_values("arrival_timestamp", kind="stable")
    trace["request_id"] = np.arange(len(trace))
    trace.to_csv(out, index=False)
    return out


PHASES = ("load", "simulation", "summary+outputs", "plots")


def replay(trace: Path, config: str, out: Path) -> dict:
    """(wall, CPU) seconds per phase of ``simulate --trace trace --trace-format sageserve --out out``."""
    t = [(time.perf_counter(), time.process_time())]
    overrides = ["workload.source=trace", f"workload.trace={json.dumps(str(trace))}", "workload.trace_format=sageserve"]
    cfg = _trace_length(load_config(config, overrides), policy=False)
    workload = build_workload(cfg, 0)
    t.append((time.perf_counter(), time.process_time()))
    sim, _ = simulate(cfg, workload, progress=False, until_drained=True)
    t.append((time.perf_counter(), time.process_time()))
    sim.check_invariants()
    summary = summarize(sim, t[2][0] - t[1][0])
    write_run(out, sim, summary, cfg, plots=False)
    t.append((time.perf_counter(), time.process_time()))
    rec = sim.records()
    plot_gpu_hours(sim, out / "gpu_hours_by_state.png")
    plot_instances_vs_load(sim, rec, out / "instances_vs_load.png")
    plot_latency_cdfs(sim, rec, out / "latency_cdf.png")
    t.append((time.perf_counter(), time.process_time()))
    phases = {name: (t[i + 1][0] - t[i][0], t[i + 1][1] - t[i][1]) for i, name in enumerate(PHASES)}
    phases["total"] = (t[-1][0] - t[0][0], t[-1][1] - t[0][1])
    return {"phases": phases, "requests": len(workload), "sim_seconds": sim.now}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=SHARED_TRACE, help="SageServe-format trace to build from")
    parser.add_argument("--copies", type=int, default=8, help="copies superposed (1: the trace as it is)")
    parser.add_argument("--requests", type=int, default=ORIGINAL_REQUESTS, help="rows kept (with --copies > 1)")
    parser.add_argument("--config", default="sageserve_compat", help="scenario preset (default: sageserve_compat)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the jitter and the cut")
    parser.add_argument("--out", type=Path, help="output directory (default: a temporary one)")
    args = parser.parse_args()
    if not args.trace.is_file():
        print(f"trace {str(args.trace)!r} not found (pass --trace)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        trace = args.trace
        if args.copies > 1:
            trace = superposed_trace(args.trace, args.copies, args.requests, args.seed, Path(tmp) / "trace.csv")
        out = args.out or Path(tmp) / "run"
        out.mkdir(parents=True, exist_ok=True)
        p = replay(trace, args.config, out)
    load = os.getloadavg()[0]
    print(f"{p['requests']:,} requests, {p['sim_seconds']:,.0f} simulated s ({args.config}); "
          f"load average {load:.2f} on {os.cpu_count()} cores")
    print(f"  {'phase':<16} {'wall s':>7} {'CPU s':>7}")
    for name, (wall, cpu) in p["phases"].items():
        print(f"  {name:<16} {wall:7.2f} {cpu:7.2f}")
    total = p["phases"]["total"][0]
    if p["requests"] == ORIGINAL_REQUESTS:
        speedup = ORIGINAL_WALL_S / total
        print(f"original: {ORIGINAL_WALL_S:g} s on {ORIGINAL_REQUESTS:,} requests; this run {speedup:.1f}x faster end "
              f"to end with plots (target >= {TARGET_SPEEDUP:g}x: {'met' if speedup >= TARGET_SPEEDUP else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
