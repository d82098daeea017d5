"""Typed configuration: dataclasses, YAML presets under ``sageserve_env/configs/``, overrides.

A scenario is ``configs/base.yaml`` (hardware and model catalogue) merged with
``configs/scenarios/<name>.yaml`` (or any YAML path), then with ``key=value`` overrides.
OmegaConf checks types against the dataclasses below; ``validate()`` checks values. Every
error names the offending key and value. ``EnvConfig`` is the typed form of the env's own
options; the command lines' schemas and their Hydra front are in ``sageserve_env.app``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SCENARIO_DIR = CONFIG_DIR / "scenarios"


_MISSING = object()


class ConfigError(ValueError):
    """A configuration key has a missing, mistyped or out-of-range value."""


@dataclass
class HardwareConfig:
    """One server SKU (e.g. a DGX-A100: 8 GPUs of 80 GB)."""

    gpus_per_server: int = 8
    gpu_memory_gb: float = 80.0
    hbm_bandwidth_tbs: float = 2.0  # per GPU, TB/s; bounds decode iterations
    cost_per_gpu_hour: float = 4.1  # USD, list price of the cloud VM divided by its GPUs
    profile: str = "a100-80gb"  # hardware name in the measured performance profiles


@dataclass
class ModelConfig:
    """One LLM: shape (for KV-cache bytes), weight bytes and its performance profile."""

    layers: int = 32
    hidden: int = 4096
    kv_heads: int = 8
    head_dim: int = 128
    weight_bytes: float = 16e9
    params: float = 8e9
    profile: str = "C"  # model name in the measured performance profiles
    tp: int = 8  # tensor-parallel degree = GPUs per instance
    # set by deployment.mode=siloed (sageserve_env.workload.deployment): the model whose requests of one tier
    # this endpoint serves, and that tier (IW: a prod endpoint, NIW: a dev endpoint); '' serves its own, both
    serves: str = ""
    tier: str = ""

    def kv_bytes_per_token(self, rule: str = "gqa", dtype_bytes: int = 2) -> float:
        """K and V for every layer: 2 x layers x kv_heads x head_dim x bytes (``gqa``);
        ``mha`` is SageServe's 2 x layers x hidden x bytes, exact only without grouped queries."""
        if rule == "mha":
            return 2.0 * self.layers * self.hidden * dtype_bytes
        return 2.0 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


@dataclass
class RegionConfig:
    """A data-center region with a fixed fleet of servers of one SKU."""

    name: str = "westus"
    servers: int = 80
    hardware: str = "dgx-a100"
    utc_offset_h: float = -8.0


@dataclass
class ScalingConfig:
    """Instance life cycle: SageServe's ``scaling_level`` and delays."""

    level: int = 2  # 0 none, 1 own-model spot (and free servers), 2 also other models' spot
    reclaim_s: float = 65.0  # spot server still holding this model -> active
    spin_up_s: float = 155.0  # load a model onto a spot server holding another model (or none)
    min_instances: int = 1  # active + starting instances every endpoint keeps
    interval_s: float = -1.0  # SageServe's scaling_interval: seconds between two scaling events of an endpoint (-1: any)
    initial_instances: int = 20  # active instances per endpoint at t=0
    initial_overrides: Dict[str, int] = field(default_factory=dict)  # "region/model" -> count


@dataclass
class BatchingConfig:
    """Continuous batching limits per instance (ORCA / vLLM)."""

    max_batch_size: int = 512
    max_batch_tokens: int = 2048  # prefill tokens per iteration (longer prompts are chunked)


@dataclass
class RoutingConfig:
    """Global (region) router and endpoint router."""

    delay_s: float = 0.0  # added between arrival and reaching the endpoint (SageServe: 1 s)
    util_threshold: float = 0.7  # try the next region when memory utilization is at or above
    no_reroute: bool = False  # always serve in the home region


@dataclass
class NIWConfig:
    """Non-interactive work: per-endpoint queues fed while memory utilization is low."""

    feed_async: bool = True
    granularity: int = 4  # requests fed per opportunity (SageServe feed_async_granularity)
    low_util: float = 0.5  # feed ``granularity`` at or below
    high_util: float = 0.6  # feed 2 x ``granularity`` in (low, high]; none above
    deadline_s: float = 86400.0  # used when a trace has no per-request SLA


@dataclass
class SLOConfig:
    """Service-level objectives of interactive requests."""

    iw_ttft_s: float = 10.0
    iw_e2e_s: Optional[float] = None
    drop_iw_after_s: Optional[float] = None  # drop IW requests waiting for a batch slot this long


@dataclass
class PerfConfig:
    """Performance-model options (``sageserve_compat`` mirrors the original simulator)."""

    iteration_overhead_s: float = 0.0  # added to every iteration
    mixed_prefill_factor: Optional[float] = None  # mixed iteration = factor x prefill time
    kv_bytes_rule: str = "gqa"  # or "mha" (SageServe's 2 x layers x hidden x 2)


@dataclass
class ArbiterConfig:
    """How the heuristic arbiters of ``agents/`` decide where the original SageServe's differ from
    ours (``docs/compat.md``). The defaults are ours; ``sageserve_compat`` sets the original's."""

    trigger: str = "interval"  # "arrival": an endpoint decides once per request that reached it (SageServe)
    reclaim_wait_s: Optional[float] = None  # wait after reclaiming own-model spot (None: the reclaim delay)
    spin_up_wait_s: Optional[float] = None  # wait after loading a server (None: the spin-up delay)
    down_wait_s: Optional[float] = None  # wait after a scale-down (None: the policy's own)
    forecasts: Optional[str] = None  # directory of precomputed per-minute forecasts (SageServe's files)
    plan_demand: str = "peak_mean"  # or "window_max": SageServe's forecast window maximum plus dev share
    plan_throughput: str = "perf_model"  # or "fixed": an instance serves instance_tokens_per_min (SageServe)
    instance_tokens_per_min: Dict[str, float] = field(default_factory=dict)  # per model, for "fixed"
    start_instances: Optional[int] = None  # long-term modes scale every endpoint down to this at t = 0
    ua_tokens: str = "endpoint"  # or "region": LT-UA counts every request of the region (SageServe)


@dataclass
class WorkloadConfig:
    """Where requests come from: a generated day (``generator``) or a trace file."""

    source: str = "generator"  # generator | trace
    trace: Optional[str] = None
    trace_format: str = "canonical"  # sageserve | azure | canonical
    requests_per_day: float = 1.5e6
    iw_share: float = 0.86
    model_popularity: Dict[str, float] = field(default_factory=dict)  # default: uniform
    region_weights: Dict[str, float] = field(default_factory=dict)  # default: uniform
    peak_to_trough: float = 4.0
    weekend_factor: float = 0.6
    niw_job_size_mean: float = 200.0
    burst_factor: int = 1  # first minute of every hour replayed this many times
    start_day: int = 0  # day of week of the first simulated day (0 = Monday)
    days: float = 1.0
    # The v1 process (docs/workload.md); every default below keeps the v0 process exactly.
    day_level_sigma: float = 0.0  # log-sd of each (region, day)'s volume
    day_peak_sigma_h: float = 0.0  # sd of each (region, day)'s peak hour, hours
    day_swing_sigma: float = 0.0  # log-sd of each (region, day)'s peak-to-trough ratio minus 1
    rate_sigma: float = 0.0  # stationary sd of each endpoint's log-rate AR(1) over minutes
    rate_tau_s: float = 600.0  # correlation time of that AR(1)
    growth_per_day: float = 0.0  # relative growth of the volume per day (0.01 = 1 %/day)
    flash_per_day: float = 0.0  # flash crowds per day (Poisson), on IW traffic
    flash_factor: float = 5.0  # a flash crowd multiplies its target's IW rate by this
    flash_duration_s: float = 600.0
    flash_scope: str = "endpoint"  # endpoint (one region/model) | region (every model of one region)
    history_days: int = 0  # days of the same process before t = 0, given to forecasters


@dataclass
class OutageConfig:
    """A partial region outage: ``share`` of ``region``'s servers down from ``start_s`` for
    ``duration_s`` seconds (``sageserve_env/sim/faults.py``)."""

    region: str = ""
    share: float = 0.5
    start_s: float = 0.0
    duration_s: float = 3600.0


@dataclass
class FaultConfig:
    """Server faults: outages scheduled here, and ``generated`` more drawn per episode from its
    seed (``SageServeEnv.reset``: a region, and a start in the window, uniformly)."""

    outages: List[OutageConfig] = field(default_factory=list)
    generated: int = 0  # outages drawn per episode
    generated_share: float = 0.5
    generated_duration_s: float = 3600.0
    generated_earliest_s: float = 0.0  # the window a generated outage starts in
    generated_latest_s: Optional[float] = None  # None: the horizon minus the duration


@dataclass
class DeploymentConfig:
    """How a model's requests meet its instances (``sageserve_env.workload.deployment``).

    ``unified`` (SageServe's proposal): one endpoint per (region, model) serves IW and NIW.
    ``siloed`` (the original simulator's ``us3-new-dp`` controller): per region a prod endpoint
    ``<model>-p`` serving the model's IW requests and a dev endpoint ``<model>-d`` serving its NIW
    requests, each with its own instances, scaling and routing."""

    mode: str = "unified"  # unified | siloed
    prod_instances: int = 16  # siloed: initial active instances of every prod endpoint (us3-new-dp: 16)
    dev_instances: int = 4  # siloed: of every dev endpoint (us3-new-dp: 4)


@dataclass
class SimConfig:
    """Everything the simulator needs. ``duration_s`` bounds the simulated time."""

    name: str = "custom"
    regions: List[RegionConfig] = field(default_factory=list)
    models: Dict[str, ModelConfig] = field(default_factory=dict)
    hardware: Dict[str, HardwareConfig] = field(default_factory=dict)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    niw: NIWConfig = field(default_factory=NIWConfig)
    slo: SLOConfig = field(default_factory=SLOConfig)
    perf: PerfConfig = field(default_factory=PerfConfig)
    arbiter: ArbiterConfig = field(default_factory=ArbiterConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    deployment: DeploymentConfig = field(default_factory=DeploymentConfig)
    duration_s: float = 86400.0

    @property
    def region_names(self) -> List[str]:
        return [r.name for r in self.regions]

    @property
    def model_names(self) -> List[str]:
        """The endpoints' models (in a siloed deployment its prod and dev endpoints)."""
        return list(self.models)

    @property
    def workload_models(self) -> List[str]:
        """The models requests name (traces, the generator): ``model_names`` in a unified
        deployment, the models the prod and dev endpoints serve in a siloed one."""
        return list(dict.fromkeys(m.serves or name for name, m in self.models.items()))

    def initial_instances(self, region: str, model: str) -> int:
        tier = self.models[model].tier if model in self.models else ""
        default = {"IW": self.deployment.prod_instances, "NIW": self.deployment.dev_instances}.get(
            tier, self.scaling.initial_instances)
        return int(self.scaling.initial_overrides.get(f"{region}/{model}", default))


@dataclass
class EnvConfig:
    """The options of ``SageServeEnv`` (its keywords and ``default_config()``)."""

    scenario: str = "paper"  # preset name or YAML path (the env also takes a SimConfig)
    sim_overrides: Any = field(default_factory=list)  # key=value strings or a dict, applied to the scenario
    decision_interval_s: float = 60.0
    horizon_s: Optional[float] = None  # default: the scenario's duration_s
    max_delta: Optional[int] = None  # default: the largest initial instance count of an endpoint
    reward: Any = "balanced"  # preset name (configs/rewards.yaml) or dict of weights
    forecaster: str = "none"  # none | seasonal_naive | arima: fills the forecast feature
    trace_window: str = "random"  # random | start: where a trace episode begins
    fidelity: str = "detailed"  # detailed (request-level) | fast (token flows per tick, for training)
    fidelity_tick_s: float = 5.0  # tick of the fast fidelity
    initial_allocation: str = "scenario"  # scenario | first_hour: sized for the episode's first hour


def unset(schema: type) -> Any:
    """An instance of the dataclass ``schema`` with every field missing (``???``): a typed node
    of which only the keys given count (``env_kwargs={reward: cost}`` sets one option and
    leaves the others to the env ID's registration)."""
    return schema(**{f.name: MISSING for f in fields(schema)})


def _check(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}' = {value!r}: {why}")


MAX_REQUESTS_PER_DAY = 1e9  # the generator holds every request of a day in memory
UTC_OFFSETS_H = (-12.0, 14.0)  # the time zones in use on Earth


def _numbers(value: Any, key: str) -> Iterator[Tuple[str, Any]]:
    """Every number inside a config (dataclasses, dicts, lists), with its dotted key."""
    if is_dataclass(value):
        for f in fields(value):
            yield from _numbers(getattr(value, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{key}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{key}.{i}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield key, value


def validate(cfg: SimConfig) -> SimConfig:
    """Check values and cross-references; raise ConfigError naming the key.

    Every number must be finite first (an infinite delay or price would pass ``>= 0`` and
    surface later as a run with no arrivals or a NaN deep in the simulator)."""
    for key, value in _numbers(cfg, ""):
        _check(math.isfinite(value), key, value, "must be a finite number")
    _check(len(cfg.regions) > 0, "regions", cfg.regions, "at least one region is required")
    _check(len(cfg.models) > 0, "models", dict(cfg.models), "at least one model is required")
    names = cfg.region_names
    _check(len(set(names)) == len(names), "regions", names, "region names must be unique")
    for i, r in enumerate(cfg.regions):
        _check(r.servers >= 0, f"regions.{i}.servers", r.servers, "must be >= 0")
        _check(UTC_OFFSETS_H[0] <= r.utc_offset_h <= UTC_OFFSETS_H[1], f"regions.{i}.utc_offset_h", r.utc_offset_h,
               f"must be in [{UTC_OFFSETS_H[0]:g}, {UTC_OFFSETS_H[1]:g}] hours")
        _check(r.hardware in cfg.hardware, f"regions.{i}.hardware", r.hardware,
               f"unknown hardware; known: {sorted(cfg.hardware)}")
    for name, hw in cfg.hardware.items():
        for k in ("gpus_per_server", "gpu_memory_gb", "hbm_bandwidth_tbs"):
            _check(getattr(hw, k) > 0, f"hardware.{name}.{k}", getattr(hw, k), "must be > 0")
        _check(hw.cost_per_gpu_hour >= 0, f"hardware.{name}.cost_per_gpu_hour", hw.cost_per_gpu_hour, "must be >= 0")
    for name, m in cfg.models.items():
        _check("/" not in name, f"models.{name}", name, "model names may not contain '/'")
        for k in ("layers", "hidden", "kv_heads", "head_dim", "weight_bytes", "params", "tp"):
            _check(getattr(m, k) > 0, f"models.{name}.{k}", getattr(m, k), "must be > 0")
        for r in cfg.regions:
            hw = cfg.hardware[r.hardware]
            _check(m.tp <= hw.gpus_per_server, f"models.{name}.tp", m.tp,
                   f"exceeds the {hw.gpus_per_server} GPUs of a server in region {r.name}")
            _check(m.weight_bytes < m.tp * hw.gpu_memory_gb * 1e9, f"models.{name}.weight_bytes", m.weight_bytes,
                   f"weights do not fit in {m.tp} GPUs of {hw.gpu_memory_gb} GB (region {r.name})")
    s = cfg.scaling
    _check(s.level in (0, 1, 2), "scaling.level", s.level, "must be 0, 1 or 2")
    _check(s.reclaim_s >= 0, "scaling.reclaim_s", s.reclaim_s, "must be >= 0")
    _check(s.spin_up_s >= 0, "scaling.spin_up_s", s.spin_up_s, "must be >= 0")
    _check(s.min_instances >= 0, "scaling.min_instances", s.min_instances, "must be >= 0")
    _check(s.interval_s == -1 or s.interval_s >= 0, "scaling.interval_s", s.interval_s, "must be >= 0 or -1 (no limit)")
    _check(s.initial_instances >= 0, "scaling.initial_instances", s.initial_instances, "must be >= 0")
    for key, n in s.initial_overrides.items():
        parts = key.split("/")
        _check(len(parts) == 2 and parts[0] in names and parts[1] in cfg.models,
               f"scaling.initial_overrides.{key}", n, "key must be 'region/model' with a known region and model")
        _check(n >= 0, f"scaling.initial_overrides.{key}", n, "must be >= 0")
    d = cfg.deployment
    _check(d.mode in ("unified", "siloed"), "deployment.mode", d.mode, "must be 'unified' or 'siloed'")
    for k in ("prod_instances", "dev_instances"):
        _check(getattr(d, k) >= 0, f"deployment.{k}", getattr(d, k), "must be >= 0")
    for r in cfg.regions:
        total = sum(cfg.initial_instances(r.name, m) for m in cfg.models)
        _check(total <= r.servers, f"regions.{r.name}.servers", r.servers,
               f"fewer servers than the {total} initial instances")
        for m in cfg.models:
            n = cfg.initial_instances(r.name, m)
            _check(n >= s.min_instances, f"scaling.initial_instances ({r.name}/{m})", n,
                   f"below scaling.min_instances={s.min_instances}")
    b = cfg.batching
    _check(b.max_batch_size >= 1, "batching.max_batch_size", b.max_batch_size, "must be >= 1")
    _check(b.max_batch_tokens >= 1, "batching.max_batch_tokens", b.max_batch_tokens, "must be >= 1")
    _check(cfg.routing.delay_s >= 0, "routing.delay_s", cfg.routing.delay_s, "must be >= 0")
    _check(cfg.routing.delay_s < cfg.duration_s, "routing.delay_s", cfg.routing.delay_s,
           f"must be below duration_s={cfg.duration_s:g} (no request would reach an endpoint)")
    _check(0 < cfg.routing.util_threshold <= 1, "routing.util_threshold", cfg.routing.util_threshold, "must be in (0, 1]")
    n = cfg.niw
    _check(n.granularity >= 1, "niw.granularity", n.granularity, "must be >= 1")
    _check(0 <= n.low_util <= n.high_util <= 1, "niw.low_util/high_util", (n.low_util, n.high_util),
           "need 0 <= low_util <= high_util <= 1")
    _check(n.deadline_s > 0, "niw.deadline_s", n.deadline_s, "must be > 0")
    _check(cfg.slo.iw_ttft_s > 0, "slo.iw_ttft_s", cfg.slo.iw_ttft_s, "must be > 0")
    _check(cfg.slo.iw_e2e_s is None or cfg.slo.iw_e2e_s > 0, "slo.iw_e2e_s", cfg.slo.iw_e2e_s, "must be > 0 or null")
    _check(cfg.slo.drop_iw_after_s is None or cfg.slo.drop_iw_after_s > 0, "slo.drop_iw_after_s",
           cfg.slo.drop_iw_after_s, "must be > 0 or null")
    p = cfg.perf
    _check(p.iteration_overhead_s >= 0, "perf.iteration_overhead_s", p.iteration_overhead_s, "must be >= 0")
    _check(p.mixed_prefill_factor is None or p.mixed_prefill_factor >= 1, "perf.mixed_prefill_factor",
           p.mixed_prefill_factor, "must be >= 1 or null")
    _check(p.kv_bytes_rule in ("gqa", "mha"), "perf.kv_bytes_rule", p.kv_bytes_rule, "must be 'gqa' or 'mha'")
    a = cfg.arbiter
    _check(a.trigger in ("interval", "arrival"), "arbiter.trigger", a.trigger, "must be 'interval' or 'arrival'")
    for k in ("reclaim_wait_s", "spin_up_wait_s", "down_wait_s"):
        _check(getattr(a, k) is None or getattr(a, k) >= 0, f"arbiter.{k}", getattr(a, k), "must be >= 0 or null")
    _check(a.plan_demand in ("peak_mean", "window_max"), "arbiter.plan_demand", a.plan_demand,
           "must be 'peak_mean' or 'window_max'")
    _check(a.plan_throughput in ("perf_model", "fixed"), "arbiter.plan_throughput", a.plan_throughput,
           "must be 'perf_model' or 'fixed'")
    for k, v in a.instance_tokens_per_min.items():
        _check(k in cfg.models, f"arbiter.instance_tokens_per_min.{k}", v, "unknown model")
        _check(v > 0, f"arbiter.instance_tokens_per_min.{k}", v, "must be > 0")
    _check(a.plan_throughput != "fixed" or set(a.instance_tokens_per_min) == set(cfg.models),
           "arbiter.instance_tokens_per_min", sorted(a.instance_tokens_per_min),
           f"plan_throughput=fixed needs every model {list(cfg.models)}")
    _check(a.start_instances is None or a.start_instances >= s.min_instances, "arbiter.start_instances",
           a.start_instances, f"must be >= scaling.min_instances={s.min_instances} or null")
    _check(a.ua_tokens in ("endpoint", "region"), "arbiter.ua_tokens", a.ua_tokens, "must be 'endpoint' or 'region'")
    w = cfg.workload
    _check(w.source in ("generator", "trace"), "workload.source", w.source, "must be 'generator' or 'trace'")
    _check(w.source != "trace" or bool(w.trace), "workload.trace", w.trace, "a trace path is required when source=trace")
    _check(w.trace_format in ("sageserve", "azure", "canonical"), "workload.trace_format", w.trace_format,
           "must be sageserve, azure or canonical")
    _check(0 < w.requests_per_day <= MAX_REQUESTS_PER_DAY, "workload.requests_per_day", w.requests_per_day,
           f"must be in (0, {MAX_REQUESTS_PER_DAY:g}]")
    _check(w.niw_job_size_mean >= 1, "workload.niw_job_size_mean", w.niw_job_size_mean, "must be >= 1")
    _check(0 <= w.iw_share <= 1, "workload.iw_share", w.iw_share, "must be in [0, 1]")
    _check(w.peak_to_trough >= 1, "workload.peak_to_trough", w.peak_to_trough, "must be >= 1")
    _check(w.weekend_factor > 0, "workload.weekend_factor", w.weekend_factor, "must be > 0")
    _check(w.burst_factor >= 1, "workload.burst_factor", w.burst_factor, "must be >= 1")
    _check(0 <= w.start_day <= 6, "workload.start_day", w.start_day, "must be in 0..6")
    _check(w.days > 0, "workload.days", w.days, "must be > 0")
    for k in ("day_level_sigma", "day_peak_sigma_h", "day_swing_sigma", "rate_sigma", "flash_per_day"):
        _check(getattr(w, k) >= 0, f"workload.{k}", getattr(w, k), "must be >= 0")
    _check(w.rate_tau_s > 0, "workload.rate_tau_s", w.rate_tau_s, "must be > 0")
    _check(w.growth_per_day > -1, "workload.growth_per_day", w.growth_per_day, "must be > -1")
    _check(w.flash_factor >= 1, "workload.flash_factor", w.flash_factor, "must be >= 1")
    _check(w.flash_duration_s > 0, "workload.flash_duration_s", w.flash_duration_s, "must be > 0")
    _check(w.flash_scope in ("endpoint", "region"), "workload.flash_scope", w.flash_scope,
           "must be 'endpoint' or 'region'")
    _check(0 <= w.history_days <= 28, "workload.history_days", w.history_days, "must be in 0..28")
    for k, v in w.model_popularity.items():
        _check(k in cfg.workload_models, f"workload.model_popularity.{k}", v, "unknown model")
        _check(v >= 0, f"workload.model_popularity.{k}", v, "must be >= 0")
    for k, v in w.region_weights.items():
        _check(k in names, f"workload.region_weights.{k}", v, "unknown region")
        _check(v >= 0, f"workload.region_weights.{k}", v, "must be >= 0")
    _check(cfg.duration_s > 0, "duration_s", cfg.duration_s, "must be > 0")
    f = cfg.faults
    for i, o in enumerate(f.outages):
        _check(o.region in names, f"faults.outages.{i}.region", o.region, f"unknown region; known: {names}")
        _check(0 < o.share <= 1, f"faults.outages.{i}.share", o.share, "must be in (0, 1]")
        _check(o.start_s >= 0, f"faults.outages.{i}.start_s", o.start_s, "must be >= 0")
        _check(o.duration_s > 0, f"faults.outages.{i}.duration_s", o.duration_s, "must be > 0")
    _check(f.generated >= 0, "faults.generated", f.generated, "must be >= 0")
    _check(0 < f.generated_share <= 1, "faults.generated_share", f.generated_share, "must be in (0, 1]")
    _check(f.generated_duration_s > 0, "faults.generated_duration_s", f.generated_duration_s, "must be > 0")
    _check(f.generated_earliest_s >= 0, "faults.generated_earliest_s", f.generated_earliest_s, "must be >= 0")
    _check(f.generated_latest_s is None or f.generated_latest_s >= f.generated_earliest_s, "faults.generated_latest_s",
           f.generated_latest_s, f"must be null or >= faults.generated_earliest_s={f.generated_earliest_s:g}")
    return cfg


def preset_names() -> List[str]:
    """Names of the scenario presets shipped in ``configs/scenarios``."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def _resolve(scenario: str) -> Path:
    path = Path(scenario)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        return path
    path = SCENARIO_DIR / f"{scenario}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown scenario {scenario!r}; presets: {preset_names()} (or pass a .yaml path)")
    return path


def load_yaml(path: Path | str) -> DictConfig:
    """A YAML mapping of config keys; a syntax error names the file, line and column."""
    try:
        layer = OmegaConf.load(path)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{_yaml_where(exc, str(path))}: YAML syntax error: {_yaml_problem(exc)}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not isinstance(layer, DictConfig):
        raise ConfigError(f"{path}: must hold a mapping of config keys (key: value), not a list")
    return layer


def _yaml_where(exc: yaml.YAMLError, name: str) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if problem:
        return f"{problem} ({context})" if context else problem
    return str(exc).splitlines()[0]


def parse_value(value: str, item: str) -> Any:
    """The YAML value of a ``key=value`` argument; a syntax error names the argument."""
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{item!r}: the value is not valid YAML: {_yaml_problem(exc)}") from None


def _drop_null_models(layer: DictConfig) -> DictConfig:
    """A scenario removes a catalogue model by setting it to null (``models: {B: null}``)."""
    models = layer.get("models")
    if models is not None:
        for name in [k for k, v in models.items() if v is None]:
            del models[name]
    return layer


def load_config(scenario: str | SimConfig = "paper", overrides: Sequence[str] | Dict[str, Any] = ()) -> SimConfig:
    """Load a preset name or YAML path (or copy a SimConfig), apply overrides, validate.

    ``overrides`` is a list of ``key=value`` strings (``scaling.level=1``) or a nested dict.
    A relative ``workload.trace`` (or ``arbiter.forecasts``) is made absolute here, from the
    working directory: the one rule every command and the env follow.
    """
    try:
        schema = OmegaConf.structured(SimConfig)
        if isinstance(scenario, SimConfig):
            layers = [OmegaConf.structured(scenario)]
        else:
            layers = [load_yaml(CONFIG_DIR / "base.yaml"), load_yaml(_resolve(scenario))]
        if isinstance(overrides, dict):
            layers.append(OmegaConf.create(overrides))
        merged: DictConfig = OmegaConf.merge(schema, _drop_null_models(OmegaConf.merge(*layers)))
        if not isinstance(overrides, dict):
            for item in overrides:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    raise ConfigError(f"override {item!r} is not of the form key=value")
                if OmegaConf.select(merged, key, default=_MISSING) is _MISSING:
                    raise ConfigError(f"config key '{key}' (from override {item!r}) does not exist")
                OmegaConf.update(merged, key, parse_value(value, item), merge=True)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"config key '{key}': {str(exc).splitlines()[0]}") from None
    assert isinstance(cfg, SimConfig)
    if cfg.workload.trace:
        cfg.workload.trace = str(Path(cfg.workload.trace).expanduser().absolute())
    if cfg.arbiter.forecasts:
        cfg.arbiter.forecasts = str(Path(cfg.arbiter.forecasts).expanduser().absolute())
    from sageserve_env.workload.deployment import deploy

    return validate(deploy(cfg))


def to_yaml(cfg: SimConfig) -> str:
    """The resolved config as YAML (written next to every run's outputs)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
