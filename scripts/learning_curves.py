"""Learning curves of train.py runs: validation reward, billed GPU-hours and IW SLO attainment
against env steps, from each run folder's ``validation.csv`` (written by ``VectorValidation``).

    python scripts/learning_curves.py RUN_DIR [RUN_DIR ...] --out docs/results/learning_curve.png
    python scripts/learning_curves.py first_run resumed_run --label "Burst-vec-v1" --reference oracle=-1388

Folders given in order are one run continued by ``resume=`` (their step counts continue): one
curve, named by ``--label``; with ``--separate`` each folder is a curve of its own.
``--reference name=reward`` draws a horizontal line on the reward panel (a baseline's reward).
``--task NAME`` draws one task's columns of a run over several tasks (``mix_envs``; the
default is the mean over every validation world).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Dict, List


def read(folder: Path) -> Dict[str, List[float]]:
    """The columns of ``validation.csv`` in ``folder`` (or the one train.py run folder below it)."""
    found = [folder / "validation.csv"] if (folder / "validation.csv").exists() else sorted(folder.rglob("validation.csv"))
    if len(found) != 1:
        raise SystemExit(f"learning_curves.py: error: {folder} holds {len(found)} validation.csv files, need exactly one")
    with open(found[0]) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"learning_curves.py: error: {found[0]} has no evaluation yet")
    return {k: [float(r[k]) for r in rows] for k in rows[0]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--separate", action="store_true", help="one curve per folder (else one continued run)")
    ap.add_argument("--label", default=None)
    ap.add_argument("--reference", action="append", default=[], help="name=reward, a horizontal line")
    ap.add_argument("--task", default=None, help="a task's columns (NAME/reward ...) of a multi-task run")
    ap.add_argument("--out", type=Path, default=Path("learning_curve.png"))
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    for folder in args.runs:
        data = read(folder)
        if args.task is not None:
            if f"{args.task}/reward" not in data:
                tasks = sorted({k.split("/")[0] for k in data if "/" in k})
                raise SystemExit(f"learning_curves.py: error: {folder} has no columns of task {args.task!r}; it has {tasks}")
            data = {"timesteps": data["timesteps"], **{k.split("/", 1)[1]: v for k, v in data.items()
                                                          if k.startswith(f"{args.task}/")}}
        if args.separate or not curves:
            curves.append((folder.name if args.separate or args.label is None else args.label, data))
        else:
            last = curves[-1][1]
            for k in last:
                last[k] = last[k] + data[k]
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    for label, data in curves:
        steps = [s / 1e6 for s in data["timesteps"]]
        for ax, key, name in zip(axes, ("reward", "billed_gpu_hours", "iw_slo_attainment"),
                                 ("validation reward (mean over episodes)", "billed GPU-hours per episode", "IW SLO attainment")):
            ax.plot(steps, data[key], marker=".", label=label)
            ax.set_ylabel(name, fontsize=9)
    for ref in args.reference:
        name, _, value = ref.partition("=")
        axes[0].axhline(float(value), ls="--", lw=0.8, color="grey")
        axes[0].annotate(name, (0, float(value)), fontsize=8, color="grey")
    axes[-1].set_xlabel("env steps (millions)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
