"""The vectorized fast fidelity: its fleet against ``Fleet``, world independence, conservation."""

import numpy as np
import pytest

from sageserve_env.config import load_config
from sageserve_env.sim.fleet import ACTIVE, DRAINING, STARTING, Fleet
from sageserve_env.sim.vector import REFUSALS, VectorFleet, VectorFlow, take_from_largest

TICK = 5.0


class _Hooks:
    """``ScalingHooks`` for a bare ``Fleet``: the first ``idle[e]`` drains hold nothing."""

    def __init__(self, n_models):
        self.n_models, self.idle, self.starts = n_models, {}, []

    def undrain(self, r, m, now):
        pass

    def start(self, r, m, ready_at):
        self.starts.append((ready_at, r, m))

    def drain(self, r, m, now):
        e = r * self.n_models + m
        if self.idle.get(e, 0) > 0:
            self.idle[e] -= 1
            return False
        return True


@pytest.mark.parametrize("level", [1, 2])
def test_vector_fleet_follows_fleet_rules(level):
    """Random scale calls, start-ups, releases: every world's counts, applied changes, refusals
    and GPU-seconds by state equal a ``Fleet`` driven with the same calls."""
    cfg = load_config("small", [f"scaling.level={level}", "scaling.min_instances=1"])
    n_worlds, rng = 4, np.random.default_rng(level)
    vf = VectorFleet(cfg, n_worlds, TICK)
    fleets = [Fleet(cfg) for _ in range(n_worlds)]
    hooks = [_Hooks(vf.n_models) for _ in range(n_worlds)]
    E = vf.n_endpoints
    now, k = 0.0, 0
    for step in range(300):
        deltas = rng.integers(-4, 5, size=(n_worlds, E)) * (rng.random((n_worlds, E)) < 0.7)
        idle = rng.integers(0, 3, size=(n_worlds, E))
        out = vf.scale(deltas, now, lambda n: np.minimum(n, idle), lambda u, kk: None)
        for w in range(n_worlds):
            hooks[w].idle = {e: int(idle[w, e]) for e in range(E)}
            for e in np.argsort(deltas[w], kind="stable"):
                if deltas[w, e]:
                    res = fleets[w].scale(int(e) // vf.n_models, int(e) % vf.n_models, int(deltas[w, e]), now, hooks[w])
                    assert out.applied[w, e] == res.applied
                    want = REFUSALS.index(res.refusal) if res.refusal is not None else -1
                    assert out.refusal[w, e] == want, (w, e, res)
        for _ in range(int(rng.integers(1, 20))):  # ticks: start-ups complete, some drains finish
            t0, now = k * TICK, (k + 1) * TICK
            vf.activate_due(k, t0)
            for w in range(n_worlds):
                due = sorted(s for s in hooks[w].starts if s[0] <= now)
                hooks[w].starts = [s for s in hooks[w].starts if s[0] > now]
                for ready, r, m in due:
                    fleets[w].activate(r, m, ready)
            release = np.minimum(vf.endpoint_counts(DRAINING), rng.integers(0, 2, size=(n_worlds, E)))
            vf.release(release, now)
            for w in range(n_worlds):
                for e in range(E):
                    for _ in range(int(release[w, e])):
                        fleets[w].release(e // vf.n_models, e % vf.n_models, now)
            k += 1
        for w in range(n_worlds):
            assert np.array_equal(vf.grid[w], fleets[w].counts), (step, w)
    gpu = vf.gpu_seconds_by_state(now)
    for w in range(n_worlds):
        np.testing.assert_allclose(gpu[w], fleets[w].gpu_seconds_by_state(now), rtol=1e-9, atol=1e-6)
        assert vf.n_scale_downs[w] == fleets[w].n_scale_downs
        assert vf.n_scale_ups[w] == len(fleets[w].scale_log) - fleets[w].n_scale_downs
    assert vf.check(now) == [None] * n_worlds
    assert out.refused.any() and (vf.endpoint_counts(STARTING) >= 0).all()


def _run(seeds, actions, scenario="small", horizon=3600.0):
    cfg = load_config(scenario, ["scaling.level=2"])
    sim = VectorFlow(cfg, seeds, horizon, ttft_histogram=True)
    stats = []
    for a in actions:
        sim.scale_all(a[: len(seeds)] if a.shape[0] >= len(seeds) else a)
        sim.run_until(sim.now + 60.0)
        stats.append((sim.world_statistics(), sim.world_gpu_seconds(), sim.fleet.grid.copy()))
    return sim, stats


def test_world_independence():
    """World i of a batch of 8 equals a batch of one seeded s + i under the same actions."""
    rng = np.random.default_rng(7)
    steps = 40
    actions = rng.integers(-2, 3, size=(steps, 8, 2))
    sim8, batch = _run([100 + i for i in range(8)], actions)
    for i in (0, 3, 7):
        sim1, single = _run([100 + i], actions[:, i: i + 1])
        for (s8, g8, c8), (s1, g1, c1) in zip(batch, single):
            np.testing.assert_allclose(s8[i], s1[0], rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(g8[i], g1[0], rtol=1e-9, atol=1e-9)
            assert np.array_equal(c8[i], c1[0])
        p8, p1 = sim8.world_ttft_percentiles()[i], sim1.world_ttft_percentiles()[0]
        assert p8.keys() == p1.keys() and p8["iw_ttft_p95"] is not None
        np.testing.assert_allclose([p8[k] for k in p8], [p1[k] for k in p1], rtol=1e-9)


def test_conservation_and_fleet_invariants_over_random_steps():
    """5,000 random steps (short decisions over 8 worlds): requests and tokens conserved, pools
    whole and non-negative, fleet counts and GPU-seconds consistent, in every world."""
    cfg = load_config("small", ["scaling.level=2"])
    rng = np.random.default_rng(3)
    sim = VectorFlow(cfg, list(range(8)), cfg.duration_s)
    for step in range(5000 // 8):
        sim.scale_all(rng.integers(-3, 4, size=(8, sim.n_endpoints)))
        sim.run_until(sim.now + 2 * TICK)
        if step % 25 == 0 or step == 5000 // 8 - 1:
            assert sim.world_problems() == [None] * 8, step
    stats = sim.world_statistics()
    assert (stats[..., 0] > 0).all()  # traffic arrived everywhere
    assert sim.fleet.n_scale_ups.min() > 0 and sim.fleet.n_scale_downs.min() > 0


def test_worlds_differ_and_seeds_repeat():
    """Different seeds draw different days; the same seed the same one."""
    actions = np.zeros((10, 3, 2), dtype=np.int64)
    _, a = _run([1, 2, 1], actions)
    last = a[-1][0]
    np.testing.assert_allclose(last[0], last[2], rtol=1e-12, atol=1e-12)
    assert not np.allclose(last[0], last[1])


def test_take_from_largest_equals_one_at_a_time():
    rng = np.random.default_rng(1)
    for _ in range(300):
        rows, cols = rng.integers(1, 6, size=2)
        counts = rng.integers(0, rng.integers(1, 12), (rows, cols))
        k = rng.integers(0, 40, rows)
        want, left = np.zeros_like(counts), counts.copy()
        for i in range(rows):
            for _ in range(min(k[i], left[i].sum())):
                d = left[i].argmax()
                left[i, d] -= 1
                want[i, d] += 1
        assert np.array_equal(take_from_largest(counts, k), want), (counts, k)


def test_generated_traffic_moments_match_the_request_generator():
    """Per-tick traffic of 16 worlds against 4 generated days of requests (small scenario): daily
    IW per endpoint, the hourly shape, NIW per day, tokens per IW request."""
    from sageserve_env.sim.perf_model import kv_capacity
    from sageserve_env.sim.vector import GeneratedTraffic, reference_workload
    from sageserve_env.workload.generator import generate
    from sageserve_env.workload.workload import IW

    cfg = load_config("small")
    R, M = len(cfg.regions), len(cfg.model_names)
    cap = np.array([kv_capacity(cfg, r, m) for r in range(R) for m in range(M)], dtype=float)
    traffic = GeneratedTraffic(cfg, TICK, 86400.0, list(range(16)), reference_workload(cfg), cap)
    rows = np.stack([np.array(traffic.row(k)) for k in range(traffic.n_ticks)])  # (ticks, worlds, columns)
    iw = rows[..., : R * M * 3].reshape(len(rows), 16, R * M, 3)
    home = rows[..., R * M * 3:].reshape(len(rows), 16, R * M, -1)
    t_iw = iw[..., 0].sum(0).mean(0) + home[..., 2].sum(0).mean(0)  # per endpoint and day
    t_hourly = (iw[..., 0] + home[..., 2]).sum((1, 2)).reshape(24, -1).sum(1) / 16
    days = [generate(cfg, np.random.default_rng(s), days=1.0) for s in range(4)]
    g_iw = np.mean([np.bincount((w.region * M + w.model)[w.tier == IW], minlength=R * M) for w in days], axis=0)
    g_hourly = np.mean([np.bincount((w.arrival_s[w.tier == IW] // 3600).astype(int), minlength=24)[:24]
                        for w in days], axis=0)
    np.testing.assert_allclose(t_iw, g_iw, rtol=0.05)
    assert np.corrcoef(t_hourly, g_hourly)[0, 1] > 0.98
    t_niw = (home[..., 0] + home[..., 3]).sum((0, 2)).mean()
    g_niw = np.mean([np.count_nonzero(w.tier != IW) for w in days])
    assert abs(t_niw / g_niw - 1) < 0.2, (t_niw, g_niw)
    fits = [(w.tier == IW) & (w.prompt_tokens + w.output_tokens <= cap[w.region * M + w.model]) for w in days]
    g_prompt = sum(w.prompt_tokens[f].sum() for w, f in zip(days, fits)) / sum(f.sum() for f in fits)
    g_need = sum((w.prompt_tokens + w.output_tokens)[f].sum() for w, f in zip(days, fits)) / sum(f.sum() for f in fits)
    n = iw[..., 0].sum()
    np.testing.assert_allclose([iw[..., 1].sum() / n, iw[..., 2].sum() / n], [g_prompt, g_need], rtol=0.03)


def test_ttft_histogram_weighs_every_first_token():
    """Each world's TTFT histogram holds its IW first tokens (every tick's points weigh them all);
    its percentiles rise with the percentile and lie within the histogram's range."""
    from sageserve_env.sim.flow import HIST_EDGES_S
    from sageserve_env.sim.stats import Stat

    cfg = load_config("paper", ["scaling.initial_instances=1"])  # queues form: a wide spread of TTFTs
    sim = VectorFlow(cfg, [5, 6], 2 * 3600.0, ttft_histogram=True)
    sim.run_until(2 * 3600.0)
    firsts = sim.world_statistics()[..., Stat.IW_FIRST_TOKENS].sum(1)
    totals = [sum(p for p in hist) for hist in sim.world_ttft_histograms()]
    np.testing.assert_allclose(totals, firsts, rtol=1e-9)
    for p in sim.world_ttft_percentiles():
        values = [p[f"iw_ttft_p{q}"] for q in (50, 90, 95, 99)]
        assert values == sorted(values) and HIST_EDGES_S[0] <= values[0] and values[-1] <= HIST_EDGES_S[-1]
    with pytest.raises(ValueError, match="ttft_histogram=True"):
        VectorFlow(cfg, [5], 600.0).world_ttft_percentiles()


def test_traffic_does_not_depend_on_the_chunk_length():
    """Chunks are for memory and speed: any chunk length draws the same ticks (each world's
    generators are read in the same order; skipped zero-mean Poisson columns read 0)."""
    from sageserve_env.sim.perf_model import kv_capacity
    from sageserve_env.sim.vector import GeneratedTraffic, reference_workload

    cfg = load_config("small", ["workload.iw_share=1.0"])  # no NIW: whole Poisson columns of mean 0
    R, M = len(cfg.regions), len(cfg.model_names)
    cap = np.array([kv_capacity(cfg, r, m) for r in range(R) for m in range(M)], dtype=float)
    ref = reference_workload(cfg)
    rows = []
    for chunk in (7, 64):
        traffic = GeneratedTraffic(cfg, TICK, 3600.0, [3, 4, 5], ref, cap)
        traffic.chunk = chunk
        traffic.reseed([3, 4, 5])
        rows.append(np.stack([traffic.row(k).copy() for k in range(traffic.n_ticks)]))
    assert np.array_equal(rows[0], rows[1])
    assert rows[0][..., 0].sum() > 0


V1_KNOBS = ["workload.requests_per_day=2e6", "workload.rate_sigma=0.218", "workload.rate_tau_s=246",
            "workload.history_days=1", "workload.start_day=1"]


def _iw_counts(sim, ticks):
    """IW requests per (tick, world, region, model) drawn by the traffic, too-large ones included."""
    t = sim.traffic
    N, R, M = t.n_worlds, t.n_regions, t.n_models
    out = np.empty((ticks, N, R, M))
    for k in range(ticks):
        row = t.row(k)
        fits = row[:, : R * M * 3].reshape(N, R * M, 3)[..., 0]
        big = row[:, R * M * 3:].reshape(N, R * M, -1)[..., 2]
        out[k] = (fits + big).reshape(N, R, M)
    return out


def _expected(sim, ticks):
    """The v1 rates' expected IW requests per (tick, world, region, model)."""
    minute = ((np.arange(ticks) + 0.5) * TICK // 60).astype(int)
    return sim.traffic.iw_rates[:, minute].astype(float).transpose(1, 0, 2, 3) * TICK


def test_v1_traffic_draws_each_worlds_own_rates():
    """Each world's rates are v1_rates of its seed (episode bins); its per-tick IW counts, over 64
    worlds and an hour, match them in mean (Poisson given the rates) and are overdispersed
    across worlds at a fixed time when rate_sigma > 0 (Poisson when the rate noise is off)."""
    from sageserve_env.workload.generator import v1_rates

    cfg = load_config("small", V1_KNOBS)
    seeds = list(range(40, 104))
    sim = VectorFlow(cfg, seeds, 3600.0)
    starts, widths, iw, _, _ = v1_rates(cfg, np.random.default_rng(seeds[5]).spawn(3)[2], 3605 / 86400, 1)
    ep = starts >= 0
    np.testing.assert_allclose(sim.traffic.iw_rates[5], (iw[..., ep] / widths[ep]).transpose(2, 0, 1), rtol=1e-6)
    ticks = 720
    counts, lam = _iw_counts(sim, ticks).sum(0), _expected(sim, ticks).sum(0)
    z = (counts - lam) / np.sqrt(lam)
    assert abs(z.mean()) < 4.0 / np.sqrt(z.size) and 0.8 < z.std() < 1.2
    # across worlds, the 5-minute counts of one endpoint: variance over mean
    window = _iw_counts(VectorFlow(cfg, seeds, 3600.0), 60)[:, :, 0, 0].sum(0)
    flat = load_config("small", V1_KNOBS[:1] + ["workload.rate_sigma=0", "workload.day_level_sigma=0"]
                       + V1_KNOBS[3:] + ["workload.flash_per_day=1", "workload.flash_factor=1"])
    plain = _iw_counts(VectorFlow(flat, seeds, 3600.0), 60)[:, :, 0, 0].sum(0)
    assert window.var(ddof=1) / window.mean() > 3.0
    assert 0.5 < plain.var(ddof=1) / plain.mean() < 1.6


def test_v1_flash_crowd_raises_only_its_target():
    """A flash crowd multiplies its target's rate (and counts); every other endpoint's rates
    and counts are those of the same seeds without it."""
    knobs = ["workload.requests_per_day=2e6", "workload.flash_per_day=24", "workload.flash_duration_s=900"]
    seeds = list(range(8))
    sims = {f: VectorFlow(load_config("small", knobs + [f"workload.flash_factor={f}"]), seeds, 3600.0) for f in (1, 6)}
    ratio = sims[6].traffic.iw_rates / sims[1].traffic.iw_rates
    hit = ratio > 1.0 + 1e-6
    assert hit.any() and (~hit).any()
    np.testing.assert_allclose(ratio[~hit], 1.0, rtol=1e-6)
    assert np.allclose(ratio[hit].max(), 6.0, rtol=1e-6)
    ticks = 720
    minute = ((np.arange(ticks) + 0.5) * TICK // 60).astype(int)
    target = hit[:, minute].transpose(1, 0, 2, 3)
    c6, c1 = _iw_counts(sims[6], ticks), _iw_counts(sims[1], ticks)
    assert c6[target].sum() > 4.0 * c1[target].sum()
    l1 = _expected(sims[1], ticks)
    rest = (c6[~target].sum() - l1[~target].sum()) / np.sqrt(l1[~target].sum())
    assert abs(rest) < 5.0


def test_v1_first_hour_allocation_per_world():
    """``first_hour=True``: each world starts from ``instances_for_demand`` on its own expected
    first-hour demand; worlds with different day levels start differently."""
    from sageserve_env.capacity import instances_for_demand

    cfg = load_config("small", ["workload.requests_per_day=3e6", "workload.day_level_sigma=0.5", "scaling.level=2"])
    sim = VectorFlow(cfg, list(range(16)), 3600.0, first_hour=True)
    prompt, output = (m.reshape(1, 2) for m in sim.traffic.token_means())
    demand = sim.traffic.first_hour_requests()
    start = sim.fleet.grid[:, :, :-1, ACTIVE]
    for i in range(16):
        assert np.array_equal(start[i], instances_for_demand(cfg, demand[i] * prompt, prompt, output))
    assert len({tuple(s.ravel()) for s in start}) > 1
    assert (sim.fleet.grid.sum(axis=(2, 3)) == sim.fleet.servers).all()
    assert sim.world_problems() == [None] * 16


def test_v1_conservation_and_fleet_invariants_over_random_steps():
    """A few hundred random steps of 8 v1 worlds started from their first-hour allocation."""
    cfg = load_config("small", V1_KNOBS + ["workload.flash_per_day=8", "scaling.level=2"])
    rng = np.random.default_rng(11)
    sim = VectorFlow(cfg, list(range(8)), cfg.duration_s, first_hour=True)
    for step in range(300):
        sim.scale_all(rng.integers(-3, 4, size=(8, sim.n_endpoints)))
        sim.run_until(sim.now + 4 * TICK)
        if step % 30 == 0 or step == 299:
            assert sim.world_problems() == [None] * 8, step
    assert sim.fleet.n_scale_ups.min() > 0 and sim.fleet.n_scale_downs.min() > 0


def test_vector_fleet_refuses_initial_counts_that_do_not_fit():
    cfg = load_config("small")
    bad = np.zeros((2, 1, 2), dtype=np.int64)
    bad[1, 0, 0] = 10 ** 6
    with pytest.raises(ValueError, match="world 1, region 0"):
        VectorFleet(cfg, 2, TICK, bad)
