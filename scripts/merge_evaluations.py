"""Merge the episodes of several ``evaluate.py suite=...`` runs into one suite's results.

    python scripts/merge_evaluations.py OUT RUN_DIR [RUN_DIR ...] [--bootstrap 1000]

Each ``RUN_DIR`` holds the ``episodes.csv`` of a suite run (the baselines today, an agent
tomorrow, on the same tasks and seeds); ``OUT`` gets the files a single run would have written
(``episodes.csv`` with the normalized scores recomputed against the merged ``reactive`` and
``oracle``, ``results.csv``/``.md``, ``aggregates.csv``/``.md``). An episode (task, policy,
seed) found in two runs is an error, as is a run without ``episodes.csv`` or without tasks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluate import write_suite  # noqa: E402

KEYS = ["task", "policy", "seed"]


def merged_episodes(runs: List[Path]) -> pd.DataFrame:
    """The episodes of every run, one row per (task, policy, seed); ValueError naming a bad run
    or a repeated episode."""
    frames = []
    for run in runs:
        path = Path(run) / "episodes.csv"
        if not path.is_file():
            raise ValueError(f"{run}: no episodes.csv (not an evaluate.py output folder)")
        frame = pd.read_csv(path)
        if "task" not in frame.columns:
            raise ValueError(f"{path}: no task column (an evaluate.py run without suite=...)")
        frames.append(frame.assign(_run=str(run)))
    episodes = pd.concat(frames, ignore_index=True)
    twice = episodes[episodes.duplicated(KEYS, keep=False)]
    if not twice.empty:
        first = twice.iloc[0]
        where = sorted(set(twice.loc[(twice[KEYS] == first[KEYS]).all(axis=1), "_run"]))
        raise ValueError(f"episode task={first['task']} policy={first['policy']} seed={first['seed']} "
                         f"is in more than one run: {where}")
    return episodes.drop(columns=["_run", "normalized_score"], errors="ignore")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)
    try:
        episodes = merged_episodes(args.runs)
    except ValueError as exc:
        print(f"merge_evaluations.py: error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    write_suite(args.out, episodes, args.bootstrap)
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
