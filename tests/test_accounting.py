"""Every request is accounted for: completed, dropped, queued or in flight, at every env step and
in the run summary, in both fidelities, under random scaling (including draining everything)."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sageserve_env.env.sageserve_env import SageServeEnv
from sageserve_env.sim.metrics import summarize

PARTS = ("requests_completed", "requests_dropped", "requests_queued", "requests_in_flight")


def _accounted(figures) -> bool:
    return figures["requests_total"] == sum(figures[k] for k in PARTS)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fidelity=st.sampled_from(["detailed", "fast"]), seed=st.integers(0, 10_000),
       level=st.sampled_from([1, 2]), min_instances=st.sampled_from([0, 1]),
       drop_after=st.sampled_from([None, 30.0]), drain_bias=st.floats(0.0, 1.0))
def test_every_request_in_one_state(fidelity, seed, level, min_instances, drop_after, drain_bias):
    overrides = [f"scaling.level={level}", f"scaling.min_instances={min_instances}",
                 "workload.requests_per_day=400000"]
    if drop_after is not None:
        overrides.append(f"slo.drop_iw_after_s={drop_after}")
    env = SageServeEnv(scenario="small", fidelity=fidelity, horizon_s=900.0, sim_overrides=overrides)
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    assert _accounted(info["kpis"])
    done = False
    while not done:
        masks = env.action_masks().reshape(env.n_endpoints, -1)
        valid = [np.flatnonzero(m) for m in masks]
        # with probability drain_bias, drain as far as allowed; else a random valid change
        action = np.array([v[0] if rng.random() < drain_bias else rng.choice(v) for v in valid])
        _, _, _, done, info = env.step(action)
        assert _accounted(info["kpis"]), info["kpis"]
    summary = summarize(env.sim, 0.0)
    assert _accounted(summary), {k: summary[k] for k in ("requests_total",) + PARTS}
    assert summary["requests_dropped"] == summary["requests_dropped_too_large"] + summary["requests_dropped_iw_timeout"]
