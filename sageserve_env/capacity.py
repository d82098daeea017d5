"""One instance's sustainable load (``instance_capacity``, explained in ``agents/throughput.py``)
and the allocation a v1 episode starts from (``first_hour_instances``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sageserve_env.config import SimConfig
from sageserve_env.workload.workload import IW, Workload

DEFAULT_PROMPT_TOKENS = 1155.0  # Azure conversation trace means, for an endpoint without IW requests
DEFAULT_OUTPUT_TOKENS = 211.0


@dataclass(frozen=True)
class Capacity:
    """The operating point of one instance."""

    batch: int  # requests in the batch
    iteration_s: float
    requests_per_s: float
    prompt_tokens_per_s: float
    tokens_per_s: float  # prompt + output tokens of the requests served per second


def instance_capacity(perf, kv_capacity_tokens: float, prompt_tokens: float, output_tokens: float,
                      max_batch_size: int, max_batch_tokens: int, target_utilization: float = 0.5,
                      max_iteration_s: float = 0.15) -> Capacity:
    """The best steady state of one instance (see the module docstring); batch 1 if no batch
    meets the limits, so the capacity is always positive."""
    p, o = max(float(prompt_tokens), 1.0), max(float(output_tokens), 1.0)
    fits = int(target_utilization * kv_capacity_tokens // (p + o))
    best = None
    for b in range(1, max(1, min(fits, max_batch_size)) + 1):
        per_iter = min(b / o, max_batch_tokens / p)  # requests retired (and prefilled) per iteration
        t = float(perf.iteration_time(min(b * p / o, float(max_batch_tokens)), b, b * (p + o / 2.0)))
        if b > 1 and t > max_iteration_s:
            break  # iterations only get longer with the batch
        if best is None or per_iter / t > best.requests_per_s:
            rate = per_iter / t
            best = Capacity(b, t, rate, rate * p, rate * (p + o))
    return best



def first_hour_instances(cfg: SimConfig, workload: Workload, window_minutes: int = 5,
                         target_utilization: float = 0.5, max_iteration_s: float = 0.15) -> dict:
    """``scaling.initial_overrides`` sizing every endpoint for the first hour of ``workload``: the
    instances that serve its peak ``window_minutes`` mean of IW prompt tokens per second (by home
    region) at the capacity of ``instance_capacity`` with the hour's mean token sizes; at least
    ``min_instances``; a region whose servers do not fit that is scaled down proportionally."""
    from sageserve_env.sim.perf_model import build_perf_models, kv_capacity

    regions, models = cfg.region_names, cfg.model_names
    ix = workload.indexed(regions, models)
    first = (workload.tier == IW) & (workload.arrival_s < 3600.0)
    minute = (workload.arrival_s[first] // 60).astype(np.int64)
    r_, m_ = ix.region[first], ix.model[first]
    shape = (len(regions), len(models))
    tokens = np.zeros((60,) + shape)
    np.add.at(tokens, (minute, r_, m_), workload.prompt_tokens[first])
    count = np.zeros(shape)
    np.add.at(count, (r_, m_), 1.0)
    prompt_sum, output_sum = np.zeros(shape), np.zeros(shape)
    np.add.at(prompt_sum, (r_, m_), workload.prompt_tokens[first])
    np.add.at(output_sum, (r_, m_), workload.output_tokens[first])
    w = max(1, window_minutes)
    c = np.cumsum(np.concatenate([np.zeros((1,) + shape), tokens]), axis=0)
    peak = ((c[w:] - c[:-w]) / w).max(axis=0) / 60.0
    perf = build_perf_models(cfg)
    need = np.zeros(shape, dtype=np.int64)
    for r, m in np.ndindex(shape):
        seen = count[r, m] > 0
        p = prompt_sum[r, m] / count[r, m] if seen else DEFAULT_PROMPT_TOKENS
        o = output_sum[r, m] / count[r, m] if seen else DEFAULT_OUTPUT_TOKENS
        cap = instance_capacity(perf[r][m], kv_capacity(cfg, r, m), p, o, cfg.batching.max_batch_size,
                                cfg.batching.max_batch_tokens, target_utilization, max_iteration_s)
        need[r, m] = int(np.ceil(peak[r, m] / cap.prompt_tokens_per_s))
    floor = cfg.scaling.min_instances
    need = np.maximum(need, floor)
    for r, region in enumerate(cfg.regions):
        if need[r].sum() > region.servers:
            need[r] = np.maximum(floor, np.floor(need[r] * region.servers / need[r].sum())).astype(np.int64)
    return {f"{regions[r]}/{models[m]}": int(need[r, m]) for r, m in np.ndindex(shape)}
