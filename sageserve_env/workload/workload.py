"""The in-memory workload: one request per index, stored column-wise in numpy arrays.

Every reader and the generator produce a ``Workload``; the simulator streams it in arrival
order. Columns are validated once here, so nothing downstream re-checks them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, NamedTuple, Sequence, Tuple

import numpy as np

IW = 0  # interactive: latency SLO on time to first token
NIW = 1  # non-interactive: batch jobs and opportunistic work with a deadline hours away
TIER_NAMES = ("IW", "NIW")


class WorkloadError(ValueError):
    """A trace or workload column holds a value the simulator cannot accept."""


@dataclass(frozen=True)
class Workload:
    """Requests of one episode, sorted by arrival time.

    ``region`` and ``model`` index ``regions`` and ``models``; ``priority`` indexes
    ``priority_orders`` (tuples of region indices, home region first). ``sla_s`` is the SLO in
    seconds relative to arrival: the TTFT target for IW, the completion deadline for NIW.
    ``batch_id`` is -1 for requests that do not belong to a batch job.
    """

    regions: Tuple[str, ...]
    models: Tuple[str, ...]
    arrival_s: np.ndarray  # float64, non-decreasing
    region: np.ndarray  # int16 home region
    priority: np.ndarray  # int16 index into priority_orders
    model: np.ndarray  # int16
    tier: np.ndarray  # int8, IW or NIW
    prompt_tokens: np.ndarray  # int32 >= 1
    output_tokens: np.ndarray  # int32 >= 1
    sla_s: np.ndarray  # float64 > 0
    batch_id: np.ndarray  # int64, -1 when none
    priority_orders: Tuple[Tuple[int, ...], ...] = ()
    source: str = "<memory>"
    meta: Dict[str, object] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        cols = ("region", "priority", "model", "tier", "prompt_tokens", "output_tokens", "sla_s", "batch_id")
        for name in cols:
            if len(getattr(self, name)) != n:
                raise WorkloadError(f"{self.source}: column '{name}' has {len(getattr(self, name))} rows, "
                                    f"arrival_s has {n}")
        if n:
            _first_bad(self, "arrival_s", ~np.isfinite(self.arrival_s) | (self.arrival_s < 0), "must be finite and >= 0")
            _first_bad(self, "arrival_s", np.r_[False, np.diff(self.arrival_s) < 0], "arrivals must be sorted by time")
            _first_bad(self, "region", (self.region < 0) | (self.region >= len(self.regions)), "unknown region index")
            _first_bad(self, "model", (self.model < 0) | (self.model >= len(self.models)), "unknown model index")
            _first_bad(self, "priority", (self.priority < 0) | (self.priority >= len(self.priority_orders)),
                       "unknown priority order")
            _first_bad(self, "tier", (self.tier != IW) & (self.tier != NIW), "tier must be 0 (IW) or 1 (NIW)")
            _first_bad(self, "prompt_tokens", self.prompt_tokens < 1, "must be >= 1")
            _first_bad(self, "output_tokens", self.output_tokens < 1, "must be >= 1")
            _first_bad(self, "sla_s", ~(self.sla_s > 0), "must be > 0")
        for i, order in enumerate(self.priority_orders):
            if not order or len(set(order)) != len(order) or not all(0 <= r < len(self.regions) for r in order):
                raise WorkloadError(f"{self.source}: priority order {i} = {order} is not a list of distinct regions")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1]) if len(self) else 0.0

    def indexed(self, region_names: Sequence[str], model_names: Sequence[str]) -> "Indexed":
        """Home region, model and priority orders of every request as indices into a config's
        ``region_names`` and ``model_names``; a name the config lacks is a ``WorkloadError``."""
        region_map = _remap(self, self.regions, region_names, "region")
        model_map = _remap(self, self.models, model_names, "model")
        orders = tuple(tuple(int(region_map[r]) for r in order) for order in self.priority_orders)
        return Indexed(region_map[self.region], model_map[self.model], orders)

    def slice_time(self, start_s: float, end_s: float) -> "Workload":
        """Requests arriving in [start_s, end_s), with times shifted so that start_s becomes 0."""
        lo, hi = np.searchsorted(self.arrival_s, [start_s, end_s], side="left")
        cols = {c: getattr(self, c)[lo:hi] for c in
                ("region", "priority", "model", "tier", "prompt_tokens", "output_tokens", "sla_s", "batch_id")}
        return Workload(self.regions, self.models, self.arrival_s[lo:hi] - start_s, priority_orders=self.priority_orders,
                        source=f"{self.source}[{start_s:g}s:{end_s:g}s]", meta=dict(self.meta), **cols)


class Indexed(NamedTuple):
    """``Workload.indexed``: per request, the config's indices of its home region and model;
    the priority orders as tuples of the config's region indices."""

    region: np.ndarray
    model: np.ndarray
    priority_orders: Tuple[Tuple[int, ...], ...]


def _remap(w: Workload, names: Sequence[str], known: Sequence[str], what: str) -> np.ndarray:
    missing = [n for n in names if n not in known]
    if missing:
        raise WorkloadError(f"{w.source}: {what} {missing} not in the config's {what}s {list(known)}")
    return np.array([list(known).index(n) for n in names], dtype=np.int64)


def _first_bad(w: Workload, column: str, bad: np.ndarray, why: str) -> None:
    if bad.any():
        row = int(np.argmax(bad))
        value = getattr(w, column)[row]
        raise WorkloadError(f"{w.source}: row {row}, column '{column}' = {value!r}: {why}")
