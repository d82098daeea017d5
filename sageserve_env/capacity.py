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
    """``scaling.initial_overrides`` sizing every endpoint for the first hour of ``workload``
    (``instances_for_demand`` on its IW prompt tokens per minute by home region, with the hour's
    mean token sizes)."""
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
    seen = count > 0
    prompt = np.where(seen, prompt_sum / np.maximum(count, 1.0), DEFAULT_PROMPT_TOKENS)
    output = np.where(seen, output_sum / np.maximum(count, 1.0), DEFAULT_OUTPUT_TOKENS)
    need = instances_for_demand(cfg, tokens, prompt, output, window_minutes, target_utilization, max_iteration_s)
    return {f"{regions[r]}/{models[m]}": int(need[r, m]) for r, m in np.ndindex(shape)}


def instances_for_demand(cfg: SimConfig, tokens: np.ndarray, prompt_tokens: np.ndarray, output_tokens: np.ndarray,
                         window_minutes: int = 5, target_utilization: float = 0.5,
                         max_iteration_s: float = 0.15) -> np.ndarray:
    """Instances per endpoint, (..., R, M) int, for the IW prompt tokens per minute ``tokens``
    (..., 60, R, M) of a first hour (any leading axes: worlds): those that serve its peak
    ``window_minutes`` mean of prompt tokens per second at the capacity of ``instance_capacity``
    with the mean token sizes ``prompt_tokens`` and ``output_tokens`` (R, M); at least
    ``min_instances``; a region whose servers do not fit that is scaled down proportionally."""
    from sageserve_env.sim.perf_model import build_perf_models, kv_capacity

    tokens = np.asarray(tokens, dtype=float)
    shape = (len(cfg.regions), len(cfg.model_names))
    if tokens.shape[-3:] != (60,) + shape:
        raise ValueError(f"tokens must end with (60 minutes, regions, models) = {(60,) + shape}, got {tokens.shape}")
    w = max(1, window_minutes)
    c = np.cumsum(np.concatenate([np.zeros(tokens.shape[:-3] + (1,) + shape), tokens], axis=-3), axis=-3)
    peak = ((c[..., w:, :, :] - c[..., :-w, :, :]) / w).max(axis=-3) / 60.0
    perf = build_perf_models(cfg)
    rate = np.empty(shape)  # prompt tokens per second one instance serves
    for r, m in np.ndindex(shape):
        rate[r, m] = instance_capacity(perf[r][m], kv_capacity(cfg, r, m), prompt_tokens[r, m], output_tokens[r, m],
                                       cfg.batching.max_batch_size, cfg.batching.max_batch_tokens,
                                       target_utilization, max_iteration_s).prompt_tokens_per_s
    floor = cfg.scaling.min_instances
    need = np.maximum(np.ceil(peak / rate).astype(np.int64), floor)
    servers = np.array([region.servers for region in cfg.regions])[:, None]
    total = need.sum(-1, keepdims=True)
    scaled = np.maximum(floor, np.floor(need * servers / np.maximum(total, 1))).astype(np.int64)
    return np.where(total > servers, scaled, need)
