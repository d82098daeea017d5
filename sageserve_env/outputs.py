"""The files a run leaves behind, and its summary as a plain-text table.

``write_run`` is shared by every way of running a simulation (the ``simulate`` command with a
static allocation or a schedule, policy episodes of ``evaluate.py``), so all runs are laid out
alike: CSV for humans, Parquet for the per-request volume.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sageserve_env.config import SimConfig, to_yaml
from sageserve_env.sim.metrics import PERCENTILES
from sageserve_env.sim.requests import DROP_REASONS
from sageserve_env.workload.workload import TIER_NAMES

TIMELINE_COLUMNS = ("time_s", "region", "model", "active", "starting", "draining", "spot")
# every file ``write_run`` may write: cleared from a reused output folder before a new run
RUN_FILES = ("summary.json", "summary.csv", "summary_by_endpoint.csv", "summary_by_region.csv", "timeline.csv",
             "scaling_events.csv", "config.yaml", "gpu_hours_by_state.png", "requests.parquet", "requests.csv",
             "instances_vs_load.png", "latency_cdf.png")


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and NaN/inf as None (valid JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def scalar_items(summary: Dict[str, Any]) -> Dict[str, Any]:
    """The entries of ``summary`` that fit in one CSV cell (numbers, strings, None)."""
    return {k: v for k, v in jsonable(summary).items() if v is None or isinstance(v, (int, float, str))}


def _write_csv(path: Path, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(header)
        out.writerows(rows)


def _dicts_to_csv(path: Path, rows: List[Dict[str, Any]]) -> None:
    rows = [scalar_items(r) for r in rows]
    header = list(rows[0]) if rows else []
    _write_csv(path, header, ([r.get(k) for k in header] for r in rows))


def _names(codes: np.ndarray, names: Iterable[str]) -> pa.DictionaryArray:
    """Integer codes as a dictionary-encoded string column; negative codes become null."""
    codes = np.asarray(codes, dtype=np.int32)
    return pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0), pa.array(list(names), pa.string()))


def records_table(sim, rec: Dict[str, np.ndarray]) -> pa.Table:
    """The per-request records ``rec`` (``sim.records()``), with names for indices.

    ``served_region`` is null until a request completes; ``drop_reason`` is "" unless dropped.
    """
    n = len(rec["arrival_s"])
    regions = sim.region_names
    return pa.table({
        "request": np.arange(n, dtype=np.int64),
        "arrival_s": rec["arrival_s"],
        "region": _names(rec["region"], regions),
        "model": _names(rec["model"], sim.model_names),
        "tier": _names(rec["tier"], TIER_NAMES),
        "prompt_tokens": rec["prompt_tokens"],
        "output_tokens": rec["output_tokens"],
        "sla_s": rec["sla_s"],
        "batch_id": rec["batch_id"],
        "served_region": _names(rec["served_region"], regions),
        "first_token_s": rec["first_token_s"],
        "completion_s": rec["completion_s"],
        "ttft_s": rec["first_token_s"] - rec["arrival_s"],
        "e2e_s": rec["completion_s"] - rec["arrival_s"],
        "drop_reason": _names(rec["drop_reason"], DROP_REASONS),
    })


def write_run(out_dir: Path | str, sim, summary: Dict[str, Any], config: SimConfig, *,
              csv_records: bool = False, plots: bool = True) -> List[Path]:
    """Write a run's outputs into ``out_dir`` (created) and return the paths written.

    summary.json (everything, NaN as null), summary.csv (one row of the global scalars),
    summary_by_endpoint.csv, summary_by_region.csv, requests.parquet (+ requests.csv with
    ``csv_records``), timeline.csv (instance counts per endpoint after every change),
    scaling_events.csv, config.yaml and, with ``plots``, the run's PNGs (the fast fidelity keeps no
    per-request records: it writes no requests.parquet and no per-request plots).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in ("summary.json", "summary.csv", "summary_by_endpoint.csv",
                                     "summary_by_region.csv", "timeline.csv", "scaling_events.csv",
                                     "config.yaml")]
    paths[0].write_text(json.dumps(jsonable(summary), indent=2, allow_nan=False) + "\n")
    row = scalar_items(summary)
    _write_csv(paths[1], row, [row.values()])
    _dicts_to_csv(paths[2], summary.get("per_endpoint", []))
    _dicts_to_csv(paths[3], summary.get("per_region", []))
    regions, models = sim.region_names, sim.model_names
    _write_csv(paths[4], TIMELINE_COLUMNS,
               ((t, regions[r], models[m], a, s, d, p) for t, r, m, a, s, d, p in sim.fleet.timeline))
    _write_csv(paths[5], ("time_s", "region", "model", "kind"),
               ((t, regions[r], models[m], kind.value) for t, r, m, kind in sim.fleet.scale_log))
    paths[6].write_text(to_yaml(config))
    if plots:
        from sageserve_env.plots import plot_gpu_hours

        paths.append(plot_gpu_hours(sim, out / "gpu_hours_by_state.png"))
    rec = sim.records()
    if rec is None:  # the fast fidelity: no per-request records, so no Parquet or CDFs
        return paths
    table = records_table(sim, rec)
    paths.append(out / "requests.parquet")
    # dictionary pages only for the name columns: tried on the float columns, they cost half the write
    names = [f.name for f in table.schema if pa.types.is_dictionary(f.type)]
    pq.write_table(table, paths[-1], use_dictionary=names)
    if csv_records:
        paths.append(out / "requests.csv")
        table.to_pandas().to_csv(paths[-1], index=False)
    if plots:
        from sageserve_env.plots import plot_instances_vs_load, plot_latency_cdfs

        paths.append(plot_instances_vs_load(sim, rec, out / "instances_vs_load.png"))
        paths.append(plot_latency_cdfs(sim, rec, out / "latency_cdf.png"))
    return paths


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)


def format_summary(summary: Dict[str, Any]) -> str:
    """A short aligned text table: headline metrics, then one line per endpoint."""
    s = jsonable(summary)
    pct = "/".join(f"p{p}" for p in PERCENTILES)
    lines = [
        ("requests arrived / completed / dropped / queued / in flight",
         f"{s['requests_total']} / {s['requests_completed']} / {s['requests_dropped']} / "
         f"{s.get('requests_queued', '-')} / {s.get('requests_in_flight', '-')}"),
        *((f"IW {name} {pct} (s)", " / ".join(_fmt(s[f"iw_{key}_p{p}"]) for p in PERCENTILES))
          for name, key in (("TTFT", "ttft"), ("e2e", "e2e"), ("TPOT", "tpot"))),
        ("IW SLO attainment", _fmt(s["iw_slo_attainment"])),
        ("NIW completed / deadline misses", f"{s['niw_completed']} / {s['niw_deadline_misses']}"),
        ("billed / donated / wastage GPU-h", " / ".join(_fmt(s[k]) for k in
                                                     ("billed_gpu_hours", "donated_gpu_hours", "wastage_gpu_hours"))),
        ("instance-hours (15-min peak)", _fmt(s["instance_hours_15min_peak"])),
        ("cost (USD)", _fmt(s["cost_usd"])),
        ("scale ups / downs", f"{s['scale_ups']} / {s['scale_downs']}"),
        ("simulated / wall seconds", f"{_fmt(s['sim_seconds'])} / {_fmt(s['wall_seconds'])}"),
    ]
    if "reward" in s:
        lines.append(("total reward", _fmt(s["reward"])))
    width = max(len(k) for k, _ in lines)
    text = [f"{k:<{width}}  {v}" for k, v in lines]
    cols = ("region", "model", "requests_total", "iw_ttft_p90", "iw_slo_attainment", "niw_deadline_misses",
            "billed_gpu_hours", "instance_hours_15min_peak", "scale_ups", "scale_downs")
    rows = [[_fmt(ep.get(c)) for c in cols] for ep in s.get("per_endpoint", [])]
    if rows:
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        text.append("")
        text.append("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
        text += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(text)


def print_summary(summary: Dict[str, Any], file: Optional[TextIO] = None) -> None:
    """Print ``format_summary(summary)`` to ``file`` (default: the current ``sys.stdout``)."""
    print(format_summary(summary), file=file)
