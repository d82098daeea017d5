"""Our simulator beside the original SageServe simulator, in compat mode, on a SageServe trace.

    python scripts/compare_original.py                       # the shared small trace, 3 modes
    python scripts/compare_original.py --factor 10 --modes reactive --original x10.json
    python scripts/compare_original.py --factor 10 --first 600 --modes reactive --original x10_600.json

Runs the ``sageserve_compat`` preset (``docs/compat.md``) with the policy of each mode deciding
every second, over the trace's span plus 600 s (the original's end time), and prints each
figure beside the original's (``original_results.json`` of the data folder, or ``--original``)
with the relative difference. ``--factor K`` replays K copies of the trace over the same span
(``heavier_trace``) and, for the long-term modes, writes that trace's forecast files the way
the original's were made (``write_sageserve_forecasts``). Figures as the original reports
them: IW latencies (routing delay included) and the time integral of serving (active and
starting) instances up to the last completion (the original's ``sim_time_reached``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.long_term import LongTermPolicy  # noqa: E402
from agents.reactive import ReactivePolicy  # noqa: E402
from agents.runner import make_env_for, run_episode  # noqa: E402
from sageserve_env.cli import build_workload  # noqa: E402
from sageserve_env.config import load_config  # noqa: E402
from sageserve_env.workload.forecast import write_sageserve_forecasts  # noqa: E402
from sageserve_env.workload.workload import IW  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "sageserve_small"
MODES = ("reactive", "lt_u", "lt_ua")
FIGURES = ("iw_ttft_p50", "iw_ttft_p95", "iw_e2e_p50", "iw_e2e_p95", "prod_instance_hours_total")
TARGETS = {"reactive": dict.fromkeys(FIGURES, 0.20), "lt_u": {"prod_instance_hours_total": 0.35},
           "lt_ua": {"prod_instance_hours_total": 0.35}}
END_AFTER_TRACE_S = 600.0  # the original's end time: the trace's span plus 600 s
DECISION_INTERVAL_S = 1.0  # an endpoint decides at most once a second where requests arrived


def heavier_trace(rows: pd.DataFrame, factor: int) -> pd.DataFrame:
    """``factor`` copies of a SageServe-format trace over the same span: copy ``j`` is the trace
    rotated by ``j / factor`` of its span (arrivals past the end wrap to its start), with
    request and batch ids made unique; sorted by arrival."""
    span = float(np.ceil(rows["arrival_timestamp"].max()))
    copies = []
    for j in range(factor):
        c = rows.copy()
        c["arrival_timestamp"] = (c["arrival_timestamp"] + j * span / factor) % span
        c["request_id"] = c["request_id"] * factor + j
        c["batch_id"] = np.where(c["batch_id"] >= 0, c["batch_id"] * factor + j, -1)
        copies.append(c)
    return pd.concat(copies).sort_values("arrival_timestamp", kind="stable").reset_index(drop=True)


def instance_hours(timeline, end_s: float, draining: bool = False) -> float:
    """Time integral over [0, end_s] of active plus starting (and with ``draining``, draining)
    instances, summed over endpoints, from a fleet timeline of (time, region, model, active,
    starting, draining, spot) rows."""
    tl = np.asarray(timeline, dtype=float).reshape(-1, 7)
    total = 0.0
    for r, m in {(int(a), int(b)) for a, b in tl[:, 1:3]}:
        rows = tl[(tl[:, 1] == r) & (tl[:, 2] == m)]
        t = np.minimum(np.append(rows[:, 0], end_s), end_s)
        total += float(np.sum(np.diff(t) * rows[:, 3:6 if draining else 5].sum(axis=1)))
    return total / 3600.0


def run_mode(mode: str, trace: Path, forecasts: Path | None, extra=(),
             decision_interval_s: float = DECISION_INTERVAL_S) -> dict:
    """Our figures for one mode on ``trace`` in compat mode (plus the config overrides ``extra``)."""
    span = float(pd.read_csv(trace, usecols=["arrival_timestamp"])["arrival_timestamp"].max())
    overrides = ["workload.source=trace", f"workload.trace={json.dumps(str(trace))}", "workload.trace_format=sageserve",
                 f"duration_s={np.ceil(span + END_AFTER_TRACE_S)}"]
    if mode == "reactive":
        policy = ReactivePolicy(decision_interval_s=decision_interval_s)
    else:  # the original's long-term runs route every request to its first region (no_reroute)
        overrides += [f"arbiter.forecasts={json.dumps(str(forecasts))}", "routing.no_reroute=true"]
        policy = LongTermPolicy(mode=mode, decision_interval_s=decision_interval_s)
    cfg = load_config("sageserve_compat", overrides + list(extra))
    env = make_env_for(policy, {"scenario": cfg, "horizon_s": cfg.duration_s})
    result = run_episode(env, policy, options={"workload": build_workload(cfg, 0)})
    sim = result.env.sim
    sim.check_invariants()
    rec = sim.records()
    end = float(np.nanmax(rec["completion_s"]))
    iw = sim.workload.tier[: len(rec["completion_s"])] == IW
    arrival = sim.workload.arrival_s[: len(iw)]
    ttft, e2e = rec["first_token_s"][iw] - arrival[iw], rec["completion_s"][iw] - arrival[iw]
    out = {"sim_time_reached": end, "completed": int(np.isfinite(rec["completion_s"]).sum()),
           "wall_s": round(result.wall_seconds, 1)}
    for q in (50, 95, 99):
        out[f"iw_ttft_p{q}"] = float(np.nanpercentile(ttft, q))
        out[f"iw_e2e_p{q}"] = float(np.nanpercentile(e2e, q))
    out["prod_instance_hours_total"] = instance_hours(sim.fleet.timeline, end)
    out["instance_hours_with_draining"] = instance_hours(sim.fleet.timeline, end, draining=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder of SMALL.csv, forecasts/, original_results.json")
    parser.add_argument("--factor", type=int, default=1, help="replay this many copies of the trace (default 1)")
    parser.add_argument("--first", type=float, help="replay only the arrivals of the first FIRST seconds "
                                                      "(of the derived trace)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--original", type=Path, help="the original's figures (default: the data folder's, factor 1)")
    parser.add_argument("--json", type=Path, help="also write our figures here")
    parser.add_argument("--decision-interval", type=float, default=DECISION_INTERVAL_S,
                        help=f"seconds between the policies' decisions (default {DECISION_INTERVAL_S:g})")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides on top of sageserve_compat, e.g. arbiter.trigger=interval")
    args = parser.parse_args(argv)
    if args.factor < 1:
        parser.error(f"--factor must be >= 1, got {args.factor}")
    if args.first is not None and not args.first > 0:
        parser.error(f"--first must be > 0, got {args.first}")
    derived = args.factor > 1 or args.first is not None
    original_path = args.original or (None if derived else args.data / "original_results.json")
    original = json.loads(original_path.read_text()) if original_path else {}
    ours, missed = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        trace, forecasts = args.data / "SMALL.csv", args.data / "forecasts"
        if derived:
            rows = heavier_trace(pd.read_csv(trace, dtype={"regions": str}), args.factor)
            if args.first is not None:
                rows = rows[rows["arrival_timestamp"] < args.first]
            trace, forecasts = Path(tmp) / f"SMALL_x{args.factor}.csv", Path(tmp) / "forecasts"
            rows.to_csv(trace, index=False)
            if any(m != "reactive" for m in args.modes):
                write_sageserve_forecasts(rows, forecasts, n_regions=3)
        for mode in args.modes:
            ours[mode] = run_mode(mode, trace, forecasts, args.overrides, args.decision_interval)
            theirs = original.get(mode, {})
            print(f"\n{mode} (x{args.factor}, {ours[mode]['wall_s']} s wall)")
            print(f"  {'figure':<28}{'ours':>10}{'original':>10}{'diff':>8}  target")
            for k in FIGURES + ("iw_ttft_p99", "iw_e2e_p99", "instance_hours_with_draining"):
                o, t = ours[mode][k], theirs.get(k)
                diff = (o - t) / t if t else float("nan")
                target = TARGETS[mode].get(k)
                verdict = "" if target is None or t is None else ("ok" if abs(diff) <= target else "MISSED")
                if verdict == "MISSED":
                    missed.append(f"{mode} {k}")
                goal = f"{target:.0%} {verdict}" if target is not None else ""
                print(f"  {k:<28}{o:>10.3f}{t if t is not None else float('nan'):>10.3f}{diff:>+8.1%}  {goal}")
    if args.json:
        args.json.write_text(json.dumps(ours, indent=1))
    if not original:
        print("\nno figures of the original to compare with (--original)")
    else:
        print("\nall targets met" if not missed else f"\ntargets missed: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
