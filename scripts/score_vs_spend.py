"""Each policy's aggregate score against its spend: a family's higher score is judged at its cost.

    python scripts/score_vs_spend.py SUITE_DIR [--policies demand_095,demand,rl_v1_headroom96]
        [--family demand=demand_095,demand_096,demand] [--reference reactive] [--out PNG]

``SUITE_DIR`` holds a suite's ``episodes.csv`` and ``aggregates.csv`` (``evaluate.py suite=v1``
or ``scripts/merge_evaluations.py``). Per policy it prints the IQM of the normalized score with
its 95% interval (``aggregates.csv``), its GPU-hours against the reference's on the same
task-seed (the mean and the largest change, in %), and on how many task-seeds it meets the
spend bar: fewer GPU-hours than the reference at an IW SLO attainment at least as high. A
policy that outscores another by billing more has not beaten it; a family (``--family NAME=
policy,...``, e.g. one planner at several headrooms) drawn as a curve shows the score its spend
buys. ``--out`` writes the figure: IQM against the mean GPU-hour change, a filled marker where
the policy meets the bar on every task-seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pandas as pd

KEYS = ["task", "seed"]
COLUMNS = ["policy", "iqm", "iqm_ci_low", "iqm_ci_high", "gpu_hours_change_mean_pct", "gpu_hours_change_max_pct",
           "under_spend", "task_seeds"]


def spend_table(episodes: pd.DataFrame, aggregates: pd.DataFrame, reference: str = "reactive",
                policies: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """One row per policy (``COLUMNS``): its IQM and interval, its GPU-hours against
    ``reference``'s on each task-seed they share, and the task-seeds where it meets the spend bar.
    ValueError naming a policy without episodes or aggregate, or a reference with no episodes."""
    ref = episodes[episodes["policy"] == reference].set_index(KEYS)
    if ref.empty:
        raise ValueError(f"the reference {reference!r} has no episodes; policies: {sorted(set(episodes['policy']))}")
    names = list(policies) if policies else [p for p in dict.fromkeys(episodes["policy"]) if p != reference]
    agg = aggregates.set_index("policy")
    rows = []
    for name in names:
        mine = episodes[episodes["policy"] == name].set_index(KEYS)
        if mine.empty or name not in agg.index:
            raise ValueError(f"policy {name!r} has no episodes or no aggregate in the suite; "
                             f"policies: {sorted(set(aggregates['policy']))}")
        shared = mine.index.intersection(ref.index)
        if shared.empty:
            raise ValueError(f"policy {name!r} shares no task-seed with the reference {reference!r}")
        mine, base = mine.loc[shared], ref.loc[shared]
        change = 100.0 * (mine["billed_gpu_hours"] / base["billed_gpu_hours"] - 1.0)
        under = (mine["billed_gpu_hours"] < base["billed_gpu_hours"]) & \
                (mine["iw_slo_attainment"] >= base["iw_slo_attainment"])
        a = agg.loc[name]
        rows.append([name, a["iqm"], a["iqm_ci_low"], a["iqm_ci_high"], change.mean(), change.max(), int(under.sum()),
                     len(shared)])
    return pd.DataFrame(rows, columns=COLUMNS)


def parse_families(entries: Sequence[str]) -> Dict[str, List[str]]:
    """``NAME=p1,p2,...`` entries as {NAME: [p1, p2, ...]}; ValueError naming a malformed one."""
    families = {}
    for entry in entries:
        name, _, members = entry.partition("=")
        policies = [p for p in members.split(",") if p]
        if not name or len(policies) < 2:
            raise ValueError(f"--family {entry!r}: expected NAME=policy,policy[,...] (two policies at least)")
        families[name] = policies
    return families


def plot(table: pd.DataFrame, families: Dict[str, List[str]], reference: str, out: Path) -> None:
    """IQM against the mean GPU-hour change, the families as curves, with the 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = table.set_index("policy")
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, members in families.items():
        rows = by.loc[[m for m in members if m in by.index]].sort_values("gpu_hours_change_mean_pct")
        ax.plot(rows["gpu_hours_change_mean_pct"], rows["iqm"], "-", color="0.6", zorder=1)
        ax.annotate(f"{name} family", (rows["gpu_hours_change_mean_pct"].iloc[0], rows["iqm"].iloc[0]),
                    textcoords="offset points", xytext=(6, -14), color="0.4")
    for name, r in by.iterrows():
        every = r["under_spend"] == r["task_seeds"]
        ax.errorbar(r["gpu_hours_change_mean_pct"], r["iqm"], yerr=[[r["iqm"] - r["iqm_ci_low"]],
                    [r["iqm_ci_high"] - r["iqm"]]], fmt="o", mfc="C0" if every else "white", mec="C0",
                    ecolor="C0", zorder=2)
        ax.annotate(f"{name} ({int(r['under_spend'])}/{int(r['task_seeds'])})", (r["gpu_hours_change_mean_pct"], r["iqm"]),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.axvline(0.0, color="0.8", lw=1, zorder=0)
    ax.set_xlabel(f"GPU-hours against {reference}'s on the same task-seed, mean (%)")
    ax.set_ylabel("IQM of the normalized score (95% interval)")
    ax.set_title(f"score against spend (filled: fewer GPU-hours than {reference} at an IW SLO at least as high "
                 "on every task-seed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/score_vs_spend.py", description=__doc__.split("\n")[0])
    p.add_argument("suite", type=Path, help="a folder with a suite's episodes.csv and aggregates.csv")
    p.add_argument("--policies", default="", help="comma-separated policies (default: every one but the reference)")
    p.add_argument("--family", action="append", default=[], help="NAME=policy,policy,...: drawn as a curve")
    p.add_argument("--reference", default="reactive")
    p.add_argument("--out", type=Path, help="the figure (PNG)")
    args = p.parse_args(argv)
    try:
        families = parse_families(args.family)
        frames = []
        for name in ("episodes.csv", "aggregates.csv"):
            path = args.suite / name
            if not path.exists():
                raise ValueError(f"{path}: no such file (a suite folder of evaluate.py or merge_evaluations.py)")
            frames.append(pd.read_csv(path))
        policies = [x for x in args.policies.split(",") if x]
        if policies:  # the families' members join the named policies (none named: every policy)
            policies = list(dict.fromkeys(policies + [m for members in families.values() for m in members]))
        table = spend_table(*frames, reference=args.reference, policies=policies)
    except (OSError, ValueError, KeyError) as exc:
        print(f"scripts/score_vs_spend.py: error: {exc}", file=sys.stderr)
        return 2
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.out is not None:
        plot(table, families, args.reference, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
