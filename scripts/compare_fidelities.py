"""Do the two fidelities rank and price the policies alike on the v1 tasks' episodes?

    python scripts/compare_fidelities.py --detailed RUN_DIR [RUN_DIR ...] --fast RUN_DIR [RUN_DIR ...]
        [--policies reactive,lt_i,lt_u,lt_ua,chiron,oracle]

Reads the ``episodes.csv`` of ``evaluate.py suite=v1`` runs (``--detailed``) and of
``suite=v1-fast`` runs (``--fast``, tasks named ``<Task>-fast-v1``) as ``merge_evaluations.py``
does (an episode in two runs of one fidelity is an error), keeps the (task, policy, seed) found
in both fidelities, and prints per task: the seeds compared, the policies ranked by mean reward
in each fidelity, Kendall's tau between the mean rewards, and the largest gaps of the fast
fidelity's mean billed GPU-hours (%) and IW SLO attainment (points) from the detailed one's.
A task with fewer than two policies in common is an error, as is a policy missing from a task.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import pandas as pd
from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).resolve().parent))

from merge_evaluations import KEYS, merged_episodes  # noqa: E402

BASELINES = "reactive,lt_i,lt_u,lt_ua,chiron,oracle"


def compare(detailed: pd.DataFrame, fast: pd.DataFrame, policies: List[str]) -> pd.DataFrame:
    """One row per task: seeds, rankings, Kendall's tau and the worst gaps (see the module doc)."""
    fast = fast.assign(task=fast["task"].str.replace("-fast-", "-", regex=False))
    both = detailed.merge(fast, on=KEYS, suffixes=("_detailed", "_fast"))
    rows = []
    for task, group in both.groupby("task", sort=False):
        missing = sorted(set(policies) - set(group["policy"]))
        if missing:
            raise ValueError(f"{task}: no episode in both fidelities for {missing}")
        means = group.groupby("policy")[[f"{m}_{f}" for m in ("reward", "billed_gpu_hours", "iw_slo_attainment")
                                         for f in ("detailed", "fast")]].mean().loc[policies]
        gpu_gap = 100 * (means["billed_gpu_hours_fast"] / means["billed_gpu_hours_detailed"] - 1)
        slo_gap = 100 * (means["iw_slo_attainment_fast"] - means["iw_slo_attainment_detailed"])
        rows.append({
            "task": task, "seeds": " ".join(str(s) for s in sorted(set(group["seed"]))),
            "detailed_ranking": ", ".join(means["reward_detailed"].sort_values(ascending=False).index),
            "fast_ranking": ", ".join(means["reward_fast"].sort_values(ascending=False).index),
            "kendall_tau": float(kendalltau(means["reward_detailed"], means["reward_fast"]).statistic),
            "worst_gpu_hours_pct": float(gpu_gap.abs().max()), "worst_gpu_hours_policy": gpu_gap.abs().idxmax(),
            "worst_slo_points": float(slo_gap.abs().max()), "worst_slo_policy": slo_gap.abs().idxmax(),
        })
    if not rows:
        raise ValueError("no (task, policy, seed) episode is in both fidelities")
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    lines = ["| task | seeds | detailed ranking (reward) | fast ranking | Kendall tau | worst GPU-h gap | "
             "worst SLO gap |", "|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        lines.append(f"| {r['task']} | {r['seeds']} | {r['detailed_ranking']} | {r['fast_ranking']} | "
                     f"{r['kendall_tau']:.3f} | {r['worst_gpu_hours_pct']:.1f}% ({r['worst_gpu_hours_policy']}) | "
                     f"{r['worst_slo_points']:.1f} pts ({r['worst_slo_policy']}) |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detailed", type=Path, nargs="+", required=True)
    parser.add_argument("--fast", type=Path, nargs="+", required=True)
    parser.add_argument("--policies", default=BASELINES, help="comma-separated (default: the six baselines)")
    args = parser.parse_args(argv)
    policies = [p for p in args.policies.split(",") if p]
    try:
        if len(policies) < 2:
            raise ValueError(f"--policies {args.policies!r}: a ranking needs two policies or more")
        table = compare(merged_episodes(args.detailed, policies), merged_episodes(args.fast, policies), policies)
    except ValueError as exc:
        print(f"compare_fidelities.py: error: {exc}", file=sys.stderr)
        return 2
    print(markdown(table), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
