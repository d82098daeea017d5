"""Run summary: latency percentiles, SLO attainment, GPU-hours and scaling counts of a simulation.

``summarize(sim, wall_seconds)`` reads the simulator's request metrics (``RecordMetrics`` over
the per-request records in the detailed fidelity, their per-endpoint estimates in the fast one),
its fleet's GPU-seconds, instance timeline and scaling log once, after (or during) a run;
nothing here runs in the event loop. In the detailed fidelity every request-level figure is
recomputable from the per-request records that ``outputs.write_run`` writes (``sim.records()``).

Definitions (``now`` = simulated time reached):

- Latencies: TTFT = first token - arrival, e2e = completion - arrival, TPOT = (completion -
  first token) / (output tokens - 1) for completed requests with more than one output token.
  Percentiles are numpy's linear interpolation, ``None`` when there is no sample.
- A request meets its SLO when its latency is ``<= sla_s`` (TTFT for IW, e2e for NIW). A
  request *misses* when it met it late, was dropped (it can never be served), or is still
  unserved with ``arrival + sla_s < now``; an unserved request still within its SLO is
  undecided. ``iw_slo_attainment`` = IW met / (IW met + IW missed), ``None`` if no IW request
  is decided; ``niw_deadline_misses`` counts missed NIW requests.
- Accounting: every request that arrived is in exactly one of ``requests_completed``,
  ``requests_dropped`` (split by reason: ``requests_dropped_too_large``,
  ``requests_dropped_iw_timeout``), ``requests_queued`` (waiting for a batch slot, an active
  instance or the NIW feed) and ``requests_in_flight`` (admitted to a batch): the first two
  summed with the last two give ``requests_total`` (the global figures; queued and in flight are
  not split per endpoint).
- Attribution: a request counts for the endpoint that served it (``served_region``, set at
  completion, and its model); requests not completed count for their home region. NIW
  requests are always served at home.
- GPU-hours: billed = active + starting + draining, donated = spot, wastage = starting, free =
  servers holding no model (region level only). Cost = billed GPU-hours x the region's price.
- ``instance_hours_15min_peak`` (SageServe's billing metric): per endpoint, the peak count of
  billed instances in each 15-minute bin of [0, now), summed over bins, divided by 4 (a
  trailing partial bin counts as a whole quarter hour); region and global values add the
  endpoints' figures.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from sageserve_env.sim.fleet import BILLED_STATES, DOWN, FREE, SCALE_UPS, SPOT, STARTING, ScaleKind
from sageserve_env.sim.requests import DropReason
from sageserve_env.sim.stats import Stat
from sageserve_env.workload.workload import IW

PERCENTILES = (50, 90, 95, 99)
SCALE_KINDS = tuple(ScaleKind)  # the last, DRAIN, scales down
QUARTER_HOUR_S = 900.0


def quarter_hour_peak_hours(times: Sequence[float], billed: Sequence[int], end_s: float,
                            bin_s: float = QUARTER_HOUR_S) -> float:
    """Instance-hours billed at each ``bin_s`` bin's peak, for one endpoint over [0, end_s).

    ``times``/``billed`` is a step function (non-decreasing times, value held until the next
    entry); of several entries at one instant only the last counts (the others last 0 s).
    """
    times = np.asarray(times, dtype=float)
    billed = np.asarray(billed, dtype=np.int64)
    if end_s <= 0 or not len(times):
        return 0.0
    last = np.r_[times[1:] != times[:-1], True]
    times, billed = times[last], billed[last]
    n_bins = math.ceil(end_s / bin_s)
    held = np.searchsorted(times, np.arange(n_bins) * bin_s, side="right") - 1
    peak = np.where(held >= 0, billed[np.maximum(held, 0)], 0)
    inside = times < end_s
    np.maximum.at(peak, (times[inside] // bin_s).astype(np.int64), billed[inside])
    return float(peak.sum()) * bin_s / 3600.0


def _percentiles(prefix: str, values: np.ndarray) -> Dict[str, Optional[float]]:
    if not len(values):
        return {f"{prefix}_p{p}": None for p in PERCENTILES}
    return {f"{prefix}_p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))}


class RecordMetrics:
    """Request metrics from per-request records (``Simulator.records()``) as of ``now``; rows
    are requests, ``region`` and ``model`` the endpoint each counts for."""

    def __init__(self, rec: Dict[str, np.ndarray], now: float) -> None:
        arrival, sla, first, done = rec["arrival_s"], rec["sla_s"], rec["first_token_s"], rec["completion_s"]
        out = rec["output_tokens"].astype(np.int64)
        self.iw = rec["tier"] == IW
        self.completed = np.isfinite(done)
        self.drop_reason = rec["drop_reason"]
        self.dropped = self.drop_reason != DropReason.NONE
        self.ttft = first - arrival
        self.e2e = done - arrival
        with np.errstate(invalid="ignore", divide="ignore"):
            self.tpot = np.where(self.completed & (out > 1), (done - first) / (out - 1), np.nan)
        overdue = ~self.dropped & (arrival + sla < now)
        self.iw_met = self.iw & (self.ttft <= sla)
        self.iw_missed = self.iw & ~self.iw_met & (np.isfinite(self.ttft) | self.dropped | overdue)
        niw = ~self.iw
        self.niw_completed = niw & self.completed
        self.niw_missed = niw & ((self.completed & (self.e2e > sla)) | (~self.completed & (self.dropped | overdue)))
        self.region = np.where(rec["served_region"] >= 0, rec["served_region"], rec["region"])
        self.model = rec["model"]

    def metrics(self, sel: Optional[np.ndarray] = None) -> Dict[str, Any]:
        """Request metrics over the requests selected by the boolean mask ``sel`` (all if None)."""
        def count(mask: np.ndarray) -> int:
            return int(np.count_nonzero(mask if sel is None else mask & sel))

        def values(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
            return x[mask if sel is None else mask & sel]

        met, missed = count(self.iw_met), count(self.iw_missed)
        iw_done = self.iw & self.completed
        m: Dict[str, Any] = {
            "requests_total": len(self.iw) if sel is None else int(np.count_nonzero(sel)),
            "requests_completed": count(self.completed),
            "requests_dropped": count(self.dropped),
            "requests_dropped_too_large": count(self.drop_reason == DropReason.TOO_LARGE),
            "requests_dropped_iw_timeout": count(self.drop_reason == DropReason.IW_TIMEOUT),
            "iw_requests": count(self.iw),
        }
        m.update(_percentiles("iw_ttft", values(self.ttft, self.iw & np.isfinite(self.ttft))))
        m.update(_percentiles("iw_e2e", values(self.e2e, iw_done)))
        m.update(_percentiles("iw_tpot", values(self.tpot, iw_done & np.isfinite(self.tpot))))
        m["iw_slo_attainment"] = met / (met + missed) if met + missed else None
        m["niw_requests"] = count(~self.iw)
        m["niw_completed"] = count(self.niw_completed)
        m["niw_deadline_misses"] = count(self.niw_missed)
        return m


def _accounting(fleet, gpu_s: np.ndarray, peaks: np.ndarray, scale_counts: np.ndarray,
                region: int, model: Optional[int]) -> Dict[str, Any]:
    """GPU-hours, cost, instance-hours and scaling counts of one endpoint, or of a whole region
    (``model`` None; then with the GPU-hours of servers holding no model)."""
    models = slice(None) if model is None else [model]
    g = gpu_s[region, models].sum(axis=0) / 3600.0  # GPU-hours per state
    billed = float(g[list(BILLED_STATES)].sum())
    m: Dict[str, Any] = {
        "billed_gpu_hours": billed,
        "donated_gpu_hours": float(g[SPOT]),
        "wastage_gpu_hours": float(g[STARTING]),
    }
    if model is None:
        m["free_gpu_hours"] = float(g[FREE])
        m["down_gpu_hours"] = float(g[DOWN])  # servers down in a fault: not billed
    m["billed_instance_hours"] = billed / float(fleet.gpus_per_server[region])
    m["instance_hours_15min_peak"] = float(peaks[region, models].sum())
    m["cost_usd"] = billed * float(fleet.cost_per_gpu_hour[region])
    kinds = scale_counts[region, models].sum(axis=0)
    m["scale_ups"] = int(kinds[:len(SCALE_UPS)].sum())
    m["scale_downs"] = int(kinds[SCALE_KINDS.index(ScaleKind.DRAIN)])
    m.update({f"scale_{k.value}": int(v) for k, v in zip(SCALE_KINDS, kinds)})
    return m


def summarize(sim, wall_seconds: float) -> Dict[str, Any]:
    """Global metrics plus ``per_endpoint`` and ``per_region`` lists of the same metrics.

    Values are plain Python numbers or ``None`` (never NaN), so the dict dumps to valid JSON.
    """
    n_r, n_m = len(sim.region_names), len(sim.model_names)
    req = sim.request_metrics()
    gpu_s = sim.gpu_seconds_by_state()
    fleet = sim.fleet

    tl = np.asarray(fleet.timeline, dtype=float).reshape(-1, 7)
    peaks = np.zeros((n_r, n_m))
    for r in range(n_r):
        for m in range(n_m):
            rows = tl[(tl[:, 1] == r) & (tl[:, 2] == m)]
            peaks[r, m] = quarter_hour_peak_hours(rows[:, 0], rows[:, 3:6].sum(axis=1), sim.now)

    scale_counts = np.zeros((n_r, n_m, len(SCALE_KINDS)), dtype=np.int64)
    for _, r, m, kind in fleet.scale_log:
        scale_counts[r, m, SCALE_KINDS.index(kind)] += 1

    per_endpoint: List[Dict[str, Any]] = []
    per_region: List[Dict[str, Any]] = []
    for r, region in enumerate(sim.region_names):
        in_region = req.region == r
        for m, model in enumerate(sim.model_names):
            row = {"region": region, "model": model, **req.metrics(in_region & (req.model == m))}
            row.update(_accounting(fleet, gpu_s, peaks, scale_counts, r, m))
            per_endpoint.append(row)
        row = {"region": region, **req.metrics(in_region)}
        row.update(_accounting(fleet, gpu_s, peaks, scale_counts, r, None))
        per_region.append(row)

    summary: Dict[str, Any] = req.metrics()
    # every request that arrived is completed, dropped (by reason), queued or in flight
    summary["requests_queued"] = sim.queued()
    summary["requests_in_flight"] = sim.in_flight()
    summary["requests_retried"] = int(sim.statistics()[:, Stat.RETRIED].sum())  # after a fault, counted once each time
    for key, value in per_region[0].items():  # accounting: the regions' sum
        if key not in summary and key != "region":
            summary[key] = type(value)(sum(row[key] for row in per_region))
    summary["sim_seconds"] = float(sim.now)
    summary["wall_seconds"] = float(wall_seconds)
    summary["per_endpoint"] = per_endpoint
    summary["per_region"] = per_region
    return summary
