"""Small builders shared by the simulator tests: tiny configs and hand-written workloads."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Optional, Sequence

import numpy as np

from sageserve_env.config import SimConfig, load_config
from sageserve_env.workload.workload import IW, NIW, Workload

__all__ = ["IW", "NIW", "make_workload", "random_workload", "one_instance_config", "capacity_memory_gb",
           "records_equal", "load_script"]


def make_workload(cfg: SimConfig, arrival: Sequence[float], prompt, output, tier=IW, region=0, model=0,
                  sla=None, priority=0, orders: Optional[Sequence[Sequence[int]]] = None,
                  sort: bool = True) -> Workload:
    """A workload over ``cfg``'s regions and models; scalar columns are broadcast.

    ``region``/``model`` may be indices or names. ``orders`` are priority orders (region index
    tuples); by default one per region, home first, then the others in config order.
    """
    regions, models = tuple(cfg.region_names), tuple(cfg.model_names)
    arrival = np.asarray(arrival, dtype=float)
    n = len(arrival)

    def col(v, dtype):
        return np.broadcast_to(np.asarray(v, dtype=dtype), (n,)).copy()

    def idx(v, names):
        if isinstance(v, str):
            return names.index(v)
        if isinstance(v, (list, tuple, np.ndarray)) and len(v) and isinstance(v[0], str):
            return [names.index(x) for x in v]
        return v

    region_c = col(idx(region, regions), np.int16)
    if orders is None:
        orders = [tuple([r] + [o for o in range(len(regions)) if o != r]) for r in range(len(regions))]
        priority_c = region_c.copy()
    else:
        priority_c = col(priority, np.int16)
    tier_c = col(tier, np.int8)
    if sla is None:
        sla = np.where(tier_c == IW, cfg.slo.iw_ttft_s, cfg.niw.deadline_s)
    w_cols = dict(
        region=region_c, priority=priority_c, model=col(idx(model, models), np.int16), tier=tier_c,
        prompt_tokens=col(prompt, np.int32), output_tokens=col(output, np.int32), sla_s=col(sla, float),
        batch_id=np.where(tier_c == NIW, 0, -1).astype(np.int64),
    )
    if sort:
        order = np.argsort(arrival, kind="stable")
        arrival = arrival[order]
        w_cols = {k: v[order] for k, v in w_cols.items()}
    return Workload(regions, models, arrival, priority_orders=tuple(tuple(o) for o in orders), **w_cols)


def random_workload(cfg: SimConfig, n: int, duration_s: float, seed: int = 0, iw_share: float = 0.8,
                    prompt_mean: float = 1000.0, output_mean: float = 250.0) -> Workload:
    """``n`` requests uniformly over ``[0, duration_s)`` with lognormal token sizes."""
    rng = np.random.default_rng(seed)
    n_r, n_m = len(cfg.region_names), len(cfg.model_names)
    arrival = np.sort(rng.uniform(0.0, duration_s, n))
    prompt = np.clip(rng.lognormal(np.log(prompt_mean) - 0.5, 1.0, n), 1, 16000).astype(np.int32)
    output = np.clip(rng.lognormal(np.log(output_mean) - 0.5, 1.0, n), 1, 2000).astype(np.int32)
    return make_workload(cfg, arrival, prompt, output, tier=np.where(rng.random(n) < iw_share, IW, NIW),
                         region=rng.integers(0, n_r, n), model=rng.integers(0, n_m, n))


def capacity_memory_gb(cfg: SimConfig, model: str, tokens: int, hardware: str = "dgx-a100") -> float:
    """``gpu_memory_gb`` that leaves room for exactly ``tokens`` KV tokens of ``model`` (TP GPUs)."""
    m = cfg.models[model]
    kv = m.kv_bytes_per_token(cfg.perf.kv_bytes_rule)
    return (m.weight_bytes + (tokens + 0.5) * kv) / (m.tp * 1e9)


def one_instance_config(capacity_tokens: Optional[int] = None, max_batch_size: int = 512,
                        max_batch_tokens: int = 2048, extra: Optional[Dict[str, Any]] = None) -> SimConfig:
    """The ``small`` preset cut down to one region, model C, one server with one active instance,
    no routing delay, NIW routed straight to the instance (``feed_async`` off)."""
    over: Dict[str, Any] = {
        "regions": [{"name": "westus", "servers": 1, "hardware": "dgx-a100", "utc_offset_h": -8}],
        "models": {"A": None},
        "scaling": {"initial_instances": 1, "min_instances": 1},
        "routing": {"delay_s": 0.0},
        "niw": {"feed_async": False},
        "batching": {"max_batch_size": max_batch_size, "max_batch_tokens": max_batch_tokens},
    }
    if capacity_tokens is not None:
        base = load_config("small", {"models": {"A": None}})
        over["hardware"] = {"dgx-a100": {"gpu_memory_gb": capacity_memory_gb(base, "C", capacity_tokens)}}
    cfg = load_config("small", _merge(over, extra or {}))
    assert cfg.model_names == ["C"] and len(cfg.regions) == 1
    return cfg


def _merge(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def records_equal(a: Dict[str, np.ndarray], b: Dict[str, np.ndarray]) -> bool:
    """Bitwise equality of two ``Simulator.records()`` (NaN equal to NaN)."""
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.dtype.kind == "f":
            if not np.array_equal(x, y, equal_nan=True):
                return False
        elif not np.array_equal(x, y):
            return False
    return True


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported as a module (the scripts are not a package); registered in
    ``sys.modules`` so that its dataclasses resolve their module."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod
