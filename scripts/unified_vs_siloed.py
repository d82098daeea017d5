"""Unified against siloed serving on one workload: GPU-hours, instances over the day, utility per tier.

    python scripts/unified_vs_siloed.py [--scenario paper] [--policy reactive] [--fidelity detailed]
        [--seed 0] [--out runs/unified_vs_siloed] [--no-run-plots] [key=value ...]

Generates one day of the scenario (seed ``--seed``; or replays its ``workload.trace``), then lets
the policy scale it twice: in the unified deployment (every (region, model) endpoint serves IW and
NIW) and in the siloed one (``deployment.mode=siloed``: a prod endpoint per model for IW, a dev one
for NIW, 16 and 4 instances at the start as in the original's ``us3-new-dp``, or
``deployment.prod_instances``/``dev_instances``). Writes each run's outputs to ``OUT/<deployment>/``,
and ``OUT/comparison.md`` (the table), ``OUT/comparison.csv`` and ``OUT/unified_vs_siloed.png``
(instances over the day, utility per tier). The utility and what counts as served are defined in
``sageserve_env/silo.py``; ``docs/deployments.md`` has the measured table.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

from sageserve_env.cli import build_workload
from sageserve_env.outputs import scalar_items
from sageserve_env.plots import plot_deployments
from sageserve_env.silo import comparison_table, deployment_configs, run_comparison, table_rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="paper", help="scenario preset or YAML path (default: paper)")
    parser.add_argument("--policy", default="reactive", help="policy spec of agents.make_policy (default: reactive)")
    parser.add_argument("--fidelity", choices=("detailed", "fast"), default="detailed")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated day")
    parser.add_argument("--out", type=Path, default=Path("runs/unified_vs_siloed"))
    parser.add_argument("--no-run-plots", action="store_true", help="skip the per-run PNGs (the comparison's plot stays)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for both deployments")
    args = parser.parse_args()
    configs = deployment_configs(args.scenario, args.overrides)
    workload = build_workload(configs["unified"], args.seed)  # requests name catalogue models; each env assigns
    print(f"{configs['unified'].name}: {len(workload):,} requests over {configs['unified'].duration_s:g} s, "
          f"policy {args.policy}, {args.fidelity} fidelity", file=sys.stderr)
    start = time.perf_counter()
    results = run_comparison(configs, workload, args.policy, args.out, fidelity=args.fidelity,
                             plots=not args.no_run_plots)
    table = comparison_table(results)
    (args.out / "comparison.md").write_text(table + "\n")
    rows = [scalar_items(r) for r in table_rows(results)]
    with open(args.out / "comparison.csv", "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows(rows)
    plot_deployments(results, args.out / "unified_vs_siloed.png")
    print(table)
    for mode, r in results.items():
        print(f"{mode}: billed instances min / mean / max {r['billed'].min():.0f} / {np.mean(r['billed']):.1f} / "
              f"{r['billed'].max():.0f}", file=sys.stderr)
    print(f"outputs in {args.out} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
