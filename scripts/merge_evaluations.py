"""Merge the episodes of several ``evaluate.py suite=...`` runs into one suite's results.

    python scripts/merge_evaluations.py OUT RUN_DIR [RUN_DIR ...] [--bootstrap 1000]
        [--policies reactive,oracle,...] [--seeds 20000,20001] [--combine NAME=POLICY@TASK,...]
        [--reference chiron]

Each ``RUN_DIR`` holds the ``episodes.csv`` of a suite run (the baselines today, an agent
tomorrow, on the same tasks and seeds); ``OUT`` gets the files a single run would have written
(``episodes.csv`` with the normalized scores recomputed against the merged ``reactive`` and
``oracle``, ``results.csv``/``.md``, ``aggregates.csv``/``.md``). ``--policies`` and ``--seeds``
keep only those episodes of every run; ``--combine`` adds a policy ``NAME`` made of other
policies' episodes, one policy a task (one shipped agent a task, scored as one); ``--reference``
names the policy the probability of improvement is against (``reactive`` by default). An episode
(task, policy, seed) found in two runs is an error, as is a run without ``episodes.csv`` or
without tasks, a filter that keeps nothing, a ``--combine`` entry naming no episodes and a reference with none.
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


def merged_episodes(runs: List[Path], policies: Optional[List[str]] = None,
                    seeds: Optional[List[int]] = None) -> pd.DataFrame:
    """The episodes of every run (only ``policies`` and ``seeds`` when given), one row per
    (task, policy, seed); ValueError naming a bad run or a repeated episode."""
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
    if policies is not None:
        episodes = episodes[episodes["policy"].isin(policies)]
    if seeds is not None:
        episodes = episodes[episodes["seed"].isin(seeds)]
    if episodes.empty:
        raise ValueError(f"no episode of policies={policies} seeds={seeds} in {[str(r) for r in runs]}")
    twice = episodes[episodes.duplicated(KEYS, keep=False)]
    if not twice.empty:
        first = twice.iloc[0]
        where = sorted(set(twice.loc[(twice[KEYS] == first[KEYS]).all(axis=1), "_run"]))
        raise ValueError(f"episode task={first['task']} policy={first['policy']} seed={first['seed']} "
                         f"is in more than one run: {where}")
    return episodes.drop(columns=["_run", "normalized_score"], errors="ignore").reset_index(drop=True)


def combined(episodes: pd.DataFrame, spec: str) -> pd.DataFrame:
    """The episodes of ``NAME=POLICY@TASK,POLICY@TASK,...`` as policy ``NAME``; ValueError
    when the spec is malformed or a pair has no episodes."""
    name, sep, pairs = spec.partition("=")
    if not sep or not name or not pairs:
        raise ValueError(f"--combine {spec!r}: expected NAME=POLICY@TASK[,POLICY@TASK...]")
    parts = []
    for pair in pairs.split(","):
        policy, sep, task = pair.partition("@")
        if not sep or not policy or not task:
            raise ValueError(f"--combine {spec!r}: {pair!r} is not POLICY@TASK")
        rows = episodes[(episodes["policy"] == policy) & (episodes["task"] == task)]
        if rows.empty:
            raise ValueError(f"--combine {spec!r}: no episodes of policy {policy!r} on task {task!r}")
        parts.append(rows.assign(policy=name))
    return pd.concat(parts, ignore_index=True)


def _csv_list(text: str, kind=str) -> List:
    return [kind(v) for v in text.split(",") if v]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--policies", type=_csv_list, help="keep only these policies (comma-separated)")
    parser.add_argument("--seeds", type=lambda t: _csv_list(t, int), help="keep only these seeds")
    parser.add_argument("--combine", action="append", default=[], metavar="NAME=POLICY@TASK,...",
                        help="add policy NAME made of one policy's episodes a task (repeatable)")
    parser.add_argument("--reference", default="reactive", help="P(better than this policy) in the aggregates")
    args = parser.parse_args(argv)
    try:
        episodes = merged_episodes(args.runs, args.policies, args.seeds)
        extra = [combined(episodes, spec) for spec in args.combine]
        episodes = pd.concat([episodes, *extra], ignore_index=True)
        if episodes.duplicated(KEYS).any():
            first = episodes[episodes.duplicated(KEYS)].iloc[0]
            raise ValueError(f"--combine: policy {first['policy']!r} is already in the runs")
        if args.reference not in set(episodes["policy"]):
            raise ValueError(f"--reference {args.reference!r}: no episodes of that policy")
    except ValueError as exc:
        print(f"merge_evaluations.py: error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    write_suite(args.out, episodes, args.bootstrap, args.reference)
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
