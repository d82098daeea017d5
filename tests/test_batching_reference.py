"""The instance's continuous batching against an independent, deliberately naive reference.

``reference_run`` steps one instance iteration by iteration, straight from the specification
(the ``instance.py`` docstring and BRIEF section 2), without the simulator's shortcuts (decode
runs in closed form, run cutting, heaps). Hypothesis then throws small random workloads at
both and requires the same first-token and completion time for every request.
"""

from __future__ import annotations

import copy
import math
import os
from collections import deque
from typing import List, Optional, Tuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import IW, NIW, capacity_memory_gb, make_workload, one_instance_config, random_workload
from sageserve_env.config import load_config
from sageserve_env.sim import simulator as simulator_module
from sageserve_env.sim.instance import Instance
from sageserve_env.sim.perf_model import run_time
from sageserve_env.sim.simulator import Simulator


def reference_run(perf, capacity: int, max_batch_size: int, max_batch_tokens: int, arrival, prompt, output,
                  tier) -> Tuple[List[float], List[float], List[bool]]:
    """One instance, one iteration at a time. Returns first-token times, completion times and
    whether each request was dropped (its prompt + output can never fit in the KV capacity)."""
    n = len(arrival)
    first = [math.nan] * n
    done = [math.nan] * n
    dropped = [False] * n
    not_arrived = deque(range(n))  # arrival order = index order (ties keep index order)
    waiting = {IW: deque(), NIW: deque()}
    prefilling: List[list] = []  # [rid, prompt tokens not yet prefilled], admission order
    decoding: List[list] = []  # [rid, tokens generated so far]
    reserved = 0
    t = 0.0

    def idle() -> bool:
        return not (waiting[IW] or waiting[NIW] or prefilling or decoding)

    while True:
        if idle():
            if not not_arrived:
                break
            t = max(t, arrival[not_arrived[0]])  # an idle instance starts at the arrival
        # -- iteration boundary at t --------------------------------------------------
        while not_arrived and arrival[not_arrived[0]] <= t:
            rid = not_arrived.popleft()
            if prompt[rid] + output[rid] > capacity:
                dropped[rid] = True
            else:
                waiting[tier[rid]].append(rid)
        if idle():
            continue
        # admission: IW before NIW, FCFS, the first one that does not fit blocks everyone
        blocked = False
        for q in (waiting[IW], waiting[NIW]):
            while q and not blocked:
                rid = q[0]
                need = prompt[rid] + output[rid]
                if len(prefilling) + len(decoding) >= max_batch_size or reserved + need > capacity:
                    blocked = True
                else:
                    q.popleft()
                    reserved += need
                    prefilling.append([rid, prompt[rid]])
        # the iteration: a chunk of prefill tokens, IW before NIW, each in admission order;
        # one token per decoder
        budget = max_batch_tokens
        chunk = []
        for entry in sorted(prefilling, key=lambda e: tier[e[0]]):
            if budget == 0:
                break
            take = min(entry[1], budget)
            chunk.append((entry, take))
            budget -= take
        p_tokens = max_batch_tokens - budget
        kv = sum(prompt[rid] + gen for rid, gen in decoding)
        t = t + perf.iteration_time(p_tokens, len(decoding), kv)
        # -- end of the iteration ---------------------------------------------------------
        for entry in decoding:
            entry[1] += 1
        for entry, take in chunk:
            entry[1] -= take
        for entry in [e for e in prefilling if e[1] == 0]:
            prefilling.remove(entry)
            first[entry[0]] = t
            decoding.append([entry[0], 1])
        for entry in [e for e in decoding if e[1] == output[e[0]]]:
            decoding.remove(entry)
            done[entry[0]] = t
            reserved -= prompt[entry[0]] + output[entry[0]]
    return first, done, dropped


# -- the single-instance comparison --------------------------------------------------------------
_BASE = None


def _config(capacity: Optional[int], max_batch_size: int, max_batch_tokens: int):
    """Copies of one validated one-instance config (load_config is too slow per example)."""
    global _BASE
    if _BASE is None:
        _BASE = one_instance_config()
    cfg = copy.deepcopy(_BASE)
    cfg.batching.max_batch_size = max_batch_size
    cfg.batching.max_batch_tokens = max_batch_tokens
    if capacity is not None:
        cfg.hardware["dgx-a100"].gpu_memory_gb = capacity_memory_gb(cfg, "C", capacity)
    return cfg


def _compare(cfg, arrival, prompt, output, tier, step_s: Optional[float] = None) -> Simulator:
    w = make_workload(cfg, arrival, prompt, output, tier=tier)
    sim = Simulator(cfg, w)
    inst = sim.endpoints[0][0].active[0]
    assert sim.requests.n == len(arrival) and inst.state == 0
    end = 10.0 * (max(arrival) + 1.0) + 1e6
    if step_s:  # run_until in slices must not change anything
        t = 0.0
        while t < max(arrival) + step_s:
            t += step_s
            sim.run_until(t)
    sim.run_until(end)
    sim.check_invariants()
    rec = sim.records()
    first, done, dropped = reference_run(inst.perf, inst.capacity, cfg.batching.max_batch_size,
                                         cfg.batching.max_batch_tokens, list(w.arrival_s), w.prompt_tokens.tolist(),
                                         w.output_tokens.tolist(), w.tier.tolist())
    assert list(rec["drop_reason"] != 0) == dropped
    assert rec["first_token_s"] == pytest.approx(np.array(first), rel=1e-9, nan_ok=True)
    assert rec["completion_s"] == pytest.approx(np.array(done), rel=1e-9, nan_ok=True)
    assert sim.n_completed + sim.n_dropped == len(arrival)
    return sim


def test_reference_hand_case():
    """Two prompts chunked over iterations, a third admitted mid-run, one-token output."""
    cfg = _config(None, 512, 100)
    _compare(cfg, [0.0, 0.0, 0.05, 0.3], [150, 30, 70, 10], [5, 1, 40, 3], [IW, NIW, IW, NIW])


def test_simultaneous_arrivals_share_the_first_iteration():
    """Requests arriving together at an idle instance are admitted at the same boundary."""
    cfg = _config(None, 512, 2048)
    sim = _compare(cfg, [1.0, 1.0, 1.0], [100, 200, 300], [3, 3, 3], [IW, NIW, IW])
    rec = sim.records()
    assert len(set(rec["first_token_s"].tolist())) == 1


def test_kv_blocking_and_head_of_line():
    """The IW head that does not fit blocks the NIW behind it, even though that one would fit."""
    cfg = _config(1000, 512, 2048)
    sim = _compare(cfg, [0.0, 0.01, 0.02, 0.03], [500, 600, 10, 10], [100, 100, 5, 5], [IW, IW, NIW, IW])
    rec = sim.records()
    # request 1 (IW, 700 tokens) waits for request 0 to finish; the later IW 3 queues behind it
    assert rec["first_token_s"][1] > rec["completion_s"][0]
    assert rec["first_token_s"][3] >= rec["first_token_s"][1]
    assert rec["first_token_s"][2] >= rec["first_token_s"][1]


def test_batch_size_limit():
    cfg = _config(None, 2, 2048)
    sim = _compare(cfg, [0.0, 0.001, 0.002], [10, 10, 10], [50, 50, 50], [IW, IW, IW])
    rec = sim.records()
    assert rec["first_token_s"][2] > min(rec["completion_s"][:2])


def test_too_large_is_dropped_and_the_rest_served():
    cfg = _config(500, 512, 2048)
    sim = _compare(cfg, [0.0, 0.1, 0.2], [100, 450, 100], [100, 51, 100], [IW, NIW, IW])
    assert sim.records()["drop_reason"].tolist() == [0, 1, 0]


requests = st.integers(1, 40).flatmap(lambda n: st.tuples(
    st.lists(st.floats(0.0, 20.0, allow_nan=False, allow_infinity=False), min_size=n, max_size=n),
    st.lists(st.integers(1, 5000), min_size=n, max_size=n),
    st.lists(st.integers(1, 300), min_size=n, max_size=n),
    st.lists(st.sampled_from([IW, NIW]), min_size=n, max_size=n),
))


@settings(max_examples=int(os.environ.get("SIM_TEST_EXAMPLES", 150)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reqs=requests,
    capacity=st.one_of(st.none(), st.integers(300, 12000)),
    max_batch_size=st.sampled_from([1, 2, 3, 5, 16, 512]),
    max_batch_tokens=st.sampled_from([64, 100, 512, 2048]),
    time_scale=st.sampled_from([0.01, 0.1, 1.0]),
    step_s=st.one_of(st.none(), st.floats(0.05, 5.0)),
)
def test_matches_reference(reqs, capacity, max_batch_size, max_batch_tokens, time_scale, step_s):
    arrival, prompt, output, tier = reqs
    arrival = sorted(a * time_scale for a in arrival)
    _compare(_config(capacity, max_batch_size, max_batch_tokens), arrival, prompt, output, tier, step_s)


# -- several instances: closed-form decode runs vs one iteration at a time ------------------------
class SteppingInstance(Instance):
    """An instance whose decode runs last exactly one iteration (no closed form, no cutting)."""

    __slots__ = ()

    def _boundary(self, now: float) -> None:
        super()._boundary(now)
        if self.busy and self.run_iters > 1:
            self.run_iters = 1
            self.version += 1
            self.schedule(now + run_time(*self.perf.decode_run(len(self.decoders), self.batch_kv), 1), self)


def _multi_run(monkeypatch, stepping: bool, seed: int):
    cfg = load_config("small", {
        "regions": [{"name": "westus", "servers": 8}, {"name": "eastus", "servers": 8}],
        "scaling": {"initial_instances": 3},
        "batching": {"max_batch_size": 24, "max_batch_tokens": 512},
        "hardware": {"dgx-a100": {"gpu_memory_gb": 17.0}},  # A: ~3k KV tokens, C: ~0.9M
    })
    if stepping:
        monkeypatch.setattr(simulator_module, "Instance", SteppingInstance)
    w = random_workload(cfg, 600, 60.0, seed=seed, prompt_mean=600, output_mean=60)
    sim = Simulator(cfg, w)
    for k in range(1, 13):
        sim.run_until(10.0 * k)
        if k == 3:
            sim.scale("eastus", "C", -1)
    sim.run_until(1e6)
    sim.check_invariants()
    monkeypatch.setattr(simulator_module, "Instance", Instance)
    return sim


@pytest.mark.parametrize("seed", [0, 1])
def test_closed_form_runs_match_single_iterations(monkeypatch, seed):
    fast = _multi_run(monkeypatch, False, seed)
    slow = _multi_run(monkeypatch, True, seed)
    assert isinstance(slow.endpoints[0][0].active[0], SteppingInstance)
    assert not isinstance(fast.endpoints[0][0].active[0], SteppingInstance)
    a, b = fast.records(), slow.records()
    assert (a["drop_reason"] == b["drop_reason"]).all()
    assert (a["served_region"] == b["served_region"]).all()
    assert a["first_token_s"] == pytest.approx(b["first_token_s"], rel=1e-9, nan_ok=True)
    assert a["completion_s"] == pytest.approx(b["completion_s"], rel=1e-9, nan_ok=True)
    assert fast.n_completed > 500
