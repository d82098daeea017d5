"""The v1 benchmark tasks: versioned, immutable Gymnasium IDs (``docs/benchmark.md``).

A task fixes the scenario, the workload process, the horizon, the fidelity, the start (history
days for the forecasters, an allocation sized for the first hour) and its train, validation and
test seed ranges. A released spec never changes: a change is a new version (``-v2``), and
``tests/test_tasks.py`` pins each task's first test workload by a hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, Tuple

# The v1 process shared by every task (docs/workload.md): the log-rate AR(1) calibrated on the
# Azure conversation trace (scripts/calibrate_burstiness.py), day-to-day variation of volume,
# peak hour and swing, and three generated days of history before t = 0.
REALISTIC = (
    "workload.rate_sigma=0.218",
    "workload.rate_tau_s=246",
    "workload.day_level_sigma=0.1",
    "workload.day_peak_sigma_h=0.5",
    "workload.day_swing_sigma=0.15",
    "workload.history_days=3",
)
PRODUCTION = ("workload.requests_per_day=1.0e7",)  # O365's scale over the paper's three regions
LIGHT = ("workload.requests_per_day=1.5e6",)  # the v0 paper day's volume
# One partial region outage per episode (``sim/faults.py``): half of a region's servers, drawn
# per seed, down for two hours starting between 14:00 and 20:00 UTC, the regions' busy hours
# (the diurnal peak is at 13:00 local: 18:00-21:00 UTC in the paper's three regions).
OUTAGE = ("faults.generated=1", "faults.generated_share=0.5", "faults.generated_duration_s=7200",
          "faults.generated_earliest_s=50400", "faults.generated_latest_s=72000")
SUITES = ("v1", "v1-fast", "v1-vec")


@dataclass(frozen=True)
class SeedSplit:
    """Half-open seed ranges [start, stop) for training, validation (checkpoint choice) and test."""

    train: Tuple[int, int] = (0, 10_000)
    validation: Tuple[int, int] = (10_000, 10_100)
    test: Tuple[int, int] = (20_000, 20_010)

    def seeds(self, split: str) -> range:
        if split not in ("train", "validation", "test"):
            raise ValueError(f"split must be train, validation or test, got {split!r}")
        return range(*getattr(self, split))


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark task; ``env_kwargs()`` are the ``SageServeEnv`` keywords it fixes. The
    decision interval is the policy's own (the env's default is 60 s)."""

    name: str
    version: int
    why: str
    sim_overrides: Tuple[str, ...]
    horizon_s: float = 86400.0
    scenario: str = "paper"
    fidelity: str = "detailed"
    reward: str = "balanced"
    initial_allocation: str = "first_hour"
    seeds: SeedSplit = field(default_factory=SeedSplit)
    vectorized: bool = False  # the fast fidelity over many worlds (``SageServeVectorEnv``)

    @property
    def env_id(self) -> str:
        if self.vectorized:
            return f"{self.name}-vec-v{self.version}"
        return f"{self.name}{'-fast' if self.fidelity == 'fast' else ''}-v{self.version}"

    @property
    def has_faults(self) -> bool:
        return any(o.startswith("faults.") for o in self.sim_overrides)

    def in_fidelity(self, fidelity: str) -> "TaskSpec":
        """The same task run by another fidelity (``fast``: ``<Task>-fast-v1``, FlowSimulator in
        ``SageServeEnv``); its scores compare only with the same fidelity's."""
        return replace(self, fidelity=fidelity)

    def in_vector_fidelity(self) -> "TaskSpec":
        """The same task in the vectorized fast fidelity (``<Task>-vec-v1``: ``SageServeVectorEnv``
        for training over many worlds, ``SageServeFastEnv`` for one); its scores compare with
        no other fidelity's."""
        if self.has_faults:
            raise ValueError(f"task {self.name} has server faults, which the vectorized fast fidelity does not "
                             "simulate; use its -fast or detailed ID")
        return replace(self, fidelity="fast", vectorized=True)

    def env_kwargs(self) -> Dict[str, Any]:
        return {"scenario": self.scenario, "sim_overrides": list(self.sim_overrides), "horizon_s": self.horizon_s,
                "fidelity": self.fidelity, "reward": self.reward, "initial_allocation": self.initial_allocation, "trace_window": "start"}


def _tasks() -> Tuple[TaskSpec, ...]:
    return (
        TaskSpec("Day", 1, "a production-scale weekday (Tuesday): the everyday job, with realistic noise",
                 REALISTIC + PRODUCTION + ("workload.start_day=1",)),
        TaskSpec("DayLight", 1, "the same weekday at the v0 paper day's volume: endpoints near their floor",
                 REALISTIC + LIGHT + ("workload.start_day=1",)),
        TaskSpec("Week", 1, "Monday to Sunday at the paper's horizon (604,800 s): weekends and growth",
                 REALISTIC + LIGHT + ("workload.start_day=0", "workload.growth_per_day=0.01"),
                 horizon_s=604800.0),
        TaskSpec("Burst", 1, "the production weekday with flash crowds no forecast sees",
                 REALISTIC + PRODUCTION + ("workload.start_day=1", "workload.flash_per_day=8",
                                           "workload.flash_factor=6", "workload.flash_duration_s=900")),
        TaskSpec("Outage", 1, "the production weekday with a partial region outage: half of one region's servers "
                 "down for two hours in the busy hours, their requests failed over",
                 REALISTIC + PRODUCTION + ("workload.start_day=1",) + OUTAGE),
    )


def tasks(suite: str = "v1") -> Dict[str, TaskSpec]:
    """The tasks of ``suite`` by env ID (without namespace): ``v1`` in the detailed fidelity,
    ``v1-fast`` the same specs in the fast one (``<Task>-fast-v1``), ``v1-vec`` in the vectorized
    fast fidelity (``<Task>-vec-v1``, for training), without Outage: the vectorized fidelity
    simulates no server faults."""
    if suite not in SUITES:
        raise ValueError(f"unknown task suite {suite!r}; known: {list(SUITES)}")
    if suite == "v1":
        specs = _tasks()
    elif suite == "v1-fast":
        specs = tuple(t.in_fidelity("fast") for t in _tasks())
    else:
        specs = tuple(t.in_vector_fidelity() for t in _tasks() if not t.has_faults)
    return {t.env_id: t for t in specs}


def task(env_id: str) -> TaskSpec:
    """The spec of ``env_id`` (``Day-v1``, ``Day-fast-v1``, ``Day-vec-v1`` or ``sageserve_env/Day-v1``)."""
    name = env_id.split("/")[-1]
    known = {k: t for suite in SUITES for k, t in tasks(suite).items()}
    if name not in known:
        raise ValueError(f"unknown task {env_id!r}; known: {sorted(known)}")
    return known[name]
