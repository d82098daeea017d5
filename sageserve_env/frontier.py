"""Cost against SLO attainment: each baseline family as a curve over its main knob, and the
Pareto frontier over every point (``scripts/frontier.py``, ``docs/benchmark.md``).

A point is (billed GPU-hours, IW SLO attainment) of one policy on one task: fewer GPU-hours and
a higher attainment are better. A point is on the frontier when no other point is at least as
good in both and better in one. ``place`` judges a new policy's point against a frontier table.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

# A knob moved with the swept one, at the ratio of their defaults (0.25 / 0.5, 0.3 / 0.6), so
# that the hysteresis band scales with the threshold.
SCALED_WITH = {("reactive", "up_threshold"): "down_threshold", ("chiron", "busy_up"): "busy_down"}
COLUMNS = ("task", "family", "knob", "value", "default", "episodes", "billed_gpu_hours", "iw_slo_attainment",
           "iw_ttft_p99", "reward", "on_frontier")


@dataclass(frozen=True)
class Point:
    """One policy of the sweep: its family (a policy alias), the knob set and its value (none
    for a reference run at its defaults), whether that is the family's default, and the
    policy entry (``agents.make_policy`` spec)."""

    family: str
    knob: str
    value: float
    default: bool
    entry: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.family if not self.knob else f"{self.family}_{self.knob}={self.value:g}"


def sweep_points(sweep: Mapping[str, Mapping[str, Sequence[float]]], references: Sequence[str]) -> List[Point]:
    """The policies of a sweep: for ``sweep[family][knob]`` each value (with its ``SCALED_WITH``
    companion moved at the defaults' ratio), then each reference family at its defaults. A
    ValueError names an unknown family or knob, or a value that is not a positive number."""
    from agents import make_policy, policy_table

    table = policy_table()
    points = []
    for family, knobs in sweep.items():
        if family not in table:
            raise ValueError(f"sweep: unknown family {family!r}; known: {sorted(table)}")
        for knob, values in knobs.items():
            entry = table[family]
            if knob not in entry or knob in ("_target_", "mode"):
                known = [k for k in entry if k not in ("_target_", "mode")]
                raise ValueError(f"sweep: family {family!r} has no knob {knob!r}; knobs: {known}")
            if not values:
                raise ValueError(f"sweep.{family}.{knob}: no values")
            for value in values:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value)
                                                                                          and value > 0):
                    raise ValueError(f"sweep.{family}.{knob}: values must be positive numbers, got {value!r}")
                knobs_set = {knob: float(value)}
                companion = SCALED_WITH.get((family, knob))
                if companion is not None:
                    knobs_set[companion] = float(value) * entry[companion] / entry[knob]
                spec = {**entry, **knobs_set}
                make_policy(spec, f"{family} ({knob}={value:g})")  # every knob of the right type
                points.append(Point(family, knob, float(value), math.isclose(value, entry[knob]), spec))
    for family in references:
        if family not in table:
            raise ValueError(f"references: unknown family {family!r}; known: {sorted(table)}")
        points.append(Point(family, "", math.nan, True, table[family]))
    names = [p.name for p in points]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"sweep: {repeated} listed more than once")
    return points


def dominates(cost_a, slo_a, cost_b, slo_b):
    """Whether point a dominates point b: at most b's cost and at least b's SLO attainment,
    better in one (elementwise on arrays)."""
    return (cost_a <= cost_b) & (slo_a >= slo_b) & ((cost_a < cost_b) | (slo_a > slo_b))


def pareto_mask(cost: Sequence[float], slo: Sequence[float]) -> np.ndarray:
    """Which points no other point dominates; points with a NaN coordinate are never on the
    frontier (and dominate none)."""
    x, y = np.asarray(cost, dtype=float), np.asarray(slo, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    beaten = dominates(x[None, :], y[None, :], x[:, None], y[:, None]) & ok[None, :]  # [i, j]: j dominates i
    return ok & ~beaten.any(axis=1)


def frontier_table(episodes: pd.DataFrame, points: Sequence[Point]) -> pd.DataFrame:
    """One row per (task, point) of ``COLUMNS``: the means over the episodes (``run_one``'s rows:
    ``scenario`` the task, ``policy`` the point's name) and whether the point is on its task's
    frontier."""
    by_name = {p.name: p for p in points}
    rows = []
    for (task, name), group in episodes.groupby(["scenario", "policy"], sort=False):
        p = by_name[name]
        row = {"task": task, "family": p.family, "knob": p.knob, "value": p.value, "default": p.default,
               "episodes": len(group)}
        for metric in ("billed_gpu_hours", "iw_slo_attainment", "iw_ttft_p99", "reward"):
            row[metric] = float(pd.to_numeric(group[metric], errors="coerce").mean())
        rows.append(row)
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "on_frontier"])
    table["on_frontier"] = False
    for _, group in table.groupby("task", sort=False):
        table.loc[group.index, "on_frontier"] = pareto_mask(group["billed_gpu_hours"], group["iw_slo_attainment"])
    return table


def label(row: Mapping[str, Any]) -> str:
    """``reactive up_threshold=0.5`` or ``oracle``."""
    knob = row["knob"]
    return str(row["family"]) if not isinstance(knob, str) or not knob else f"{row['family']} {knob}={row['value']:g}"


@dataclass(frozen=True)
class Placement:
    """Where a point lies against a task's frontier: ``beyond`` (it dominates a frontier
    member), ``on`` (no point dominates it and it dominates none: it joins the frontier in a
    gap) or ``dominated``; with the points that dominate it and the frontier members it
    dominates."""

    verdict: str
    dominated_by: Tuple[str, ...]
    dominates: Tuple[str, ...]


def place(table: pd.DataFrame, task: str, billed_gpu_hours: float, iw_slo_attainment: float) -> Placement:
    """Judge a policy's point on ``task`` against the points of a frontier table (``COLUMNS``)."""
    rows = table[table["task"] == task]
    if rows.empty:
        known = sorted(set(table["task"]))
        raise ValueError(f"task {task!r} is not in the frontier table; its tasks: {known}")
    if not (math.isfinite(billed_gpu_hours) and math.isfinite(iw_slo_attainment)):
        raise ValueError(f"the point ({billed_gpu_hours}, {iw_slo_attainment}) is not finite")
    x, y = rows["billed_gpu_hours"].to_numpy(float), rows["iw_slo_attainment"].to_numpy(float)
    labels = [label(r) for _, r in rows.iterrows()]
    by = tuple(name for name, d in zip(labels, dominates(x, y, billed_gpu_hours, iw_slo_attainment)) if d)
    front = pareto_mask(x, y)
    over = tuple(name for name, d, f in zip(labels, dominates(billed_gpu_hours, iw_slo_attainment, x, y), front)
                 if d and f)
    verdict = "dominated" if by else ("beyond" if over else "on")
    return Placement(verdict, by, over)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m sageserve_env.frontier FRONTIER_CSV RESULTS_CSV``: place every (task, policy)
    row of an ``evaluate.py suite=...`` results table against the frontier of its task."""
    p = argparse.ArgumentParser(prog="python -m sageserve_env.frontier", description=main.__doc__)
    p.add_argument("frontier", type=Path, help="frontier.csv written by scripts/frontier.py")
    p.add_argument("results", type=Path, help="results.csv of evaluate.py suite=... (task, policy, ...)")
    args = p.parse_args(argv)
    try:
        table = pd.read_csv(args.frontier)
        results = pd.read_csv(args.results)
        missing = [c for c in ("task", "policy", "billed_gpu_hours", "iw_slo_attainment") if c not in results]
        if missing:
            raise ValueError(f"{args.results} has no column(s) {missing} (expected evaluate.py suite=... results)")
        lines = []
        for _, r in results.iterrows():
            where = place(table, r["task"], float(r["billed_gpu_hours"]), float(r["iw_slo_attainment"]))
            detail = (f"dominated by {', '.join(where.dominated_by)}" if where.dominated_by else
                      f"dominates {', '.join(where.dominates)}" if where.dominates else "joins the frontier")
            lines.append(f"{r['task']} {r['policy']}: {where.verdict} ({detail})")
    except (OSError, ValueError, KeyError) as exc:
        print(f"python -m sageserve_env.frontier: error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
