"""Iteration times of one LLM instance under continuous batching (see ``docs/perf_model.md``).

Prefill is quadratic in the prompt tokens of an iteration; decode is linear in the batch size
and in the KV-cache tokens the batch holds, so that the simulator can sum a run of decode
iterations in closed form. The fitted numbers (prefill, and the decode base and per-sequence
cost) come from ``configs/perf_coefficients.yaml``, written by ``scripts/fit_perf_model.py``
from the measured profiles. What depends on the model's shape, the KV read cost and the compute
floor of a decoded token, is computed here from the ``ModelConfig`` and ``HardwareConfig``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import List, Mapping, Optional, Tuple

import yaml

from sageserve_env.config import CONFIG_DIR, HardwareConfig, ModelConfig, PerfConfig, SimConfig

COEFFICIENTS_PATH = CONFIG_DIR / "perf_coefficients.yaml"


@dataclass(frozen=True)
class PerfModel:
    """Iteration times (seconds) of one instance of a model on a hardware at a TP degree."""

    prefill_base_s: float  # per prefill iteration, fixed part; includes iteration_overhead_s
    prefill_per_token_s: float  # linear cost per prompt token in the iteration
    prefill_per_token_sq_s: float  # quadratic cost (attention) per prompt token squared
    decode_base_s: float  # per decode iteration, fixed part (weights read + launch); includes overhead
    decode_per_seq_s: float  # added per sequence in the decode batch
    decode_per_kv_token_s: float  # added per KV-cache token held by the batch (HBM bandwidth)
    iteration_overhead_s: float = 0.0  # PerfConfig.iteration_overhead_s, already in both bases
    mixed_prefill_factor: Optional[float] = None  # SageServe compat: mixed = factor x prefill

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"PerfModel.{f.name} = {v!r}: must be finite and >= 0")
        if not 0 < self.decode_base_s <= self.prefill_base_s:
            # A prefill iteration reads the weights too; this also keeps iteration_time
            # non-decreasing when the first prompt token joins a decode batch.
            raise ValueError(f"PerfModel needs 0 < decode_base_s ({self.decode_base_s}) "
                             f"<= prefill_base_s ({self.prefill_base_s})")
        if self.mixed_prefill_factor is not None and self.mixed_prefill_factor < 1:
            raise ValueError(f"PerfModel.mixed_prefill_factor = {self.mixed_prefill_factor}: must be >= 1")

    def prefill_time(self, tokens: int) -> float:
        """One prefill-only iteration over ``tokens`` prompt tokens (all prompts together)."""
        return self.prefill_base_s + (self.prefill_per_token_s + self.prefill_per_token_sq_s * tokens) * tokens

    def decode_time(self, batch: int, kv_tokens: int) -> float:
        """One decode iteration of ``batch`` sequences holding ``kv_tokens`` KV tokens in all."""
        return self.decode_base_s + self.decode_per_seq_s * batch + self.decode_per_kv_token_s * kv_tokens

    def decode_run(self, batch: int, kv_tokens: int) -> Tuple[float, float]:
        """``(a, cb)`` of a run of decode iterations of a fixed batch: the first takes ``a``
        (``decode_time``) and each one more ``cb`` than the last, as every sequence adds a KV
        token; ``run_time(a, cb, k)`` is the duration of ``k`` of them."""
        c = self.decode_per_kv_token_s
        return self.decode_base_s + self.decode_per_seq_s * batch + c * kv_tokens, c * batch

    def iteration_time(self, prefill_tokens: int, batch: int, kv_tokens: int) -> float:
        """One continuous-batching iteration: ``prefill_tokens`` prompt tokens plus ``batch``
        sequences decoding one token each, the batch holding ``kv_tokens`` KV tokens.

        Default: the prefill iteration plus the decode batch's marginal cost (its base, the
        weights read, is shared). Compat mode (``mixed_prefill_factor``): a mixed iteration costs
        factor x its prefill work plus the overhead, as in SageServe; both compat cases are
        floored at the decode-only time so that adding prompt tokens never shortens an iteration.
        """
        if prefill_tokens <= 0:
            return self.decode_time(batch, kv_tokens)
        prefill = self.prefill_time(prefill_tokens)
        if self.mixed_prefill_factor is None:
            return prefill + self.decode_per_seq_s * batch + self.decode_per_kv_token_s * kv_tokens
        if batch > 0:
            overhead = self.iteration_overhead_s
            prefill = self.mixed_prefill_factor * (prefill - overhead) + overhead
        return max(prefill, self.decode_time(batch, kv_tokens))


def run_time(a: float, cb: float, k: int) -> float:
    """Seconds of ``k`` decode iterations of a run with ``PerfModel.decode_run`` coefficients."""
    return k * a + cb * (k * (k - 1) // 2)


@dataclass(frozen=True)
class Coefficients:
    """The fitted numbers of one (model profile, hardware profile, TP) entry, overhead excluded."""

    prefill_base_s: float
    prefill_per_token_s: float
    prefill_per_token_sq_s: float
    decode_base_s: float
    decode_per_seq_s: float


@dataclass(frozen=True)
class CoefficientTable:
    """The content of ``perf_coefficients.yaml``: fitted entries plus the physical assumptions."""

    entries: Mapping[Tuple[str, str, int], Coefficients]
    peak_tflops: Mapping[str, float]  # dense bf16 tensor TFLOPS per GPU, by hardware profile
    hbm_efficiency: float  # achievable fraction of the HBM bandwidth when reading the KV cache
    mfu: float  # achievable fraction of peak FLOPS, for the compute floor of a decoded token


@functools.lru_cache(maxsize=8)
def load_coefficients(path: Path = COEFFICIENTS_PATH) -> CoefficientTable:
    """Read a coefficient file once per path (read-only views, safe to share)."""
    with open(path) as fh:
        raw = yaml.safe_load(fh)
    names = [f.name for f in fields(Coefficients)]
    entries = {(str(m), str(hw), int(tp)): Coefficients(**{k: float(e[k]) for k in names})
               for m, by_hw in raw["models"].items()
               for hw, by_tp in by_hw.items()
               for tp, e in by_tp.items()}
    return CoefficientTable(
        entries=MappingProxyType(entries),
        peak_tflops=MappingProxyType({hw: float(h["peak_tflops"]) for hw, h in raw["hardware"].items()}),
        hbm_efficiency=float(raw["hbm_efficiency"]),
        mfu=float(raw["mfu"]),
    )


def kv_read_s_per_token(kv_bytes_per_token: float, tp: int, hbm_bandwidth_tbs: float,
                        hbm_efficiency: float) -> float:
    """Seconds to read one KV-cache token in a decode iteration, spread over ``tp`` GPUs."""
    return kv_bytes_per_token / (tp * hbm_bandwidth_tbs * 1e12 * hbm_efficiency)


def token_compute_s(params: float, tp: int, peak_tflops: float, mfu: float) -> float:
    """Seconds of compute for one token (2 FLOPs per parameter) on ``tp`` GPUs at ``mfu``."""
    return 2.0 * params / (tp * peak_tflops * 1e12 * mfu)


def build_perf_model(model: ModelConfig, hardware: HardwareConfig, perf: PerfConfig,
                     kv_bytes_per_token: float, coefficients: Path = COEFFICIENTS_PATH) -> PerfModel:
    """The performance model of ``model`` at ``model.tp`` on ``hardware``.

    Looks up the fitted entry (``model.profile``, ``hardware.profile``, ``model.tp``), adds the
    KV read term from ``kv_bytes_per_token`` and the HBM bandwidth, raises the per-sequence
    decode cost to at least the compute of one token, and applies ``perf``'s overhead and
    compat factor. Raises ValueError naming what is missing and what exists.
    """
    table = load_coefficients(Path(coefficients))
    key = (model.profile, hardware.profile, model.tp)
    entry = table.entries.get(key)
    if entry is None:
        known = ", ".join(f"{m}/{hw}/tp{tp}" for m, hw, tp in sorted(table.entries))
        raise ValueError(f"no performance coefficients for model profile {model.profile!r} on hardware "
                         f"profile {hardware.profile!r} at tp={model.tp} in {coefficients}; "
                         f"available (model/hardware/tp): {known}")
    overhead = perf.iteration_overhead_s
    compute = token_compute_s(model.params, model.tp, table.peak_tflops[hardware.profile], table.mfu)
    return PerfModel(
        prefill_base_s=entry.prefill_base_s + overhead,
        prefill_per_token_s=entry.prefill_per_token_s,
        prefill_per_token_sq_s=entry.prefill_per_token_sq_s,
        decode_base_s=entry.decode_base_s + overhead,
        decode_per_seq_s=max(entry.decode_per_seq_s, compute),
        decode_per_kv_token_s=kv_read_s_per_token(kv_bytes_per_token, model.tp, hardware.hbm_bandwidth_tbs,
                                                  table.hbm_efficiency),
        iteration_overhead_s=overhead,
        mixed_prefill_factor=perf.mixed_prefill_factor,
    )


def kv_capacity(cfg: SimConfig, r: int, m: int) -> int:
    """KV tokens one instance of endpoint (r, m) holds next to its weights."""
    model = cfg.models[cfg.model_names[m]]
    hw = cfg.hardware[cfg.regions[r].hardware]
    return int((model.tp * hw.gpu_memory_gb * 1e9 - model.weight_bytes) // model.kv_bytes_per_token(cfg.perf.kv_bytes_rule))


def build_perf_models(cfg: SimConfig) -> List[List[PerfModel]]:
    """The performance model of every endpoint, [region][model]."""
    out = []
    for region in cfg.regions:
        hw = cfg.hardware[region.hardware]
        out.append([build_perf_model(model, hw, cfg.perf, model.kv_bytes_per_token(cfg.perf.kv_bytes_rule))
                    for model in (cfg.models[name] for name in cfg.model_names)])
    return out
