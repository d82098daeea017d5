"""Rendering: dashboard frames of a fixed shape that follow the state; RecordVideo; the window."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sageserve_env  # noqa: F401  (registers the IDs)
from sageserve_env.env.render import HEADER_H, PANEL_H, PANEL_W, DashboardRenderer
from sageserve_env.env.sageserve_env import SageServeEnv


def _small(**kw):
    return SageServeEnv(scenario="small", horizon_s=kw.pop("horizon_s", 1800.0), render_mode="rgb_array", **kw)


def _rollout_frames(action_for_step, steps=12, seed=0):
    env = _small()
    env.reset(seed=seed)
    frames = [env.render()]
    for i in range(steps):
        env.step(action_for_step(env, i))
        frames.append(env.render())
    return env, frames


def _hold(env, i):
    return np.full(env.n_endpoints, env.max_delta)


def _drain_first(env, i):
    a = _hold(env, i)
    if i == 0:
        a[0] -= 2  # two instances of the first endpoint fewer
    return a


def test_frames_have_a_fixed_shape_and_are_deterministic():
    env, frames = _rollout_frames(_hold)
    R, M = env.n_regions, env.n_models
    assert {f.shape for f in frames} == {(HEADER_H + R * PANEL_H, (M + 1) * PANEL_W, 3)}
    assert all(f.dtype == np.uint8 for f in frames)
    _, again = _rollout_frames(_hold)
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))


def test_frames_change_with_the_state():
    env, held = _rollout_frames(_hold)
    _, drained = _rollout_frames(_drain_first)
    assert np.array_equal(held[0], drained[0])  # same state at reset, same frame
    assert not np.array_equal(held[1], held[-1])  # the clock, the load and the cost move on
    # draining the first endpoint changes its panel (row 0, column 0), not the other model's plot
    top, first = slice(HEADER_H, HEADER_H + PANEL_H), slice(0, PANEL_W)
    other = slice(PANEL_W, 2 * PANEL_W)
    assert not np.array_equal(held[-1][top, first], drained[-1][top, first])
    plot = slice(HEADER_H + 40, HEADER_H + PANEL_H - 8)
    assert np.array_equal(held[-1][plot, other], drained[-1][plot, other])
    # the first panel's plot shows fewer active (green) pixels after the drain
    from sageserve_env.env.render import ACTIVE

    def green(frame):
        return int(np.all(frame[plot, first] == ACTIVE, axis=-1).sum())

    assert green(drained[-1]) < green(held[-1])


def test_history_restarts_with_each_episode():
    env, frames = _rollout_frames(_hold)
    env.reset(seed=0)
    assert np.array_equal(env.render(), frames[0])


@pytest.mark.filterwarnings("ignore:.*alternative render modes")
def test_passes_the_env_checker_with_render_and_through_make():
    check_env(_small(horizon_s=600.0))
    env = gym.make("sageserve_env/SageServeSmall-v0", horizon_s=600.0, render_mode="rgb_array")
    env.reset(seed=1)
    assert env.render().shape == (HEADER_H + PANEL_H, 3 * PANEL_W, 3)


def test_render_modes_are_checked():
    with pytest.raises(ValueError, match="render_mode"):
        SageServeEnv(scenario="small", render_mode="ansi")
    env = SageServeEnv(scenario="small", horizon_s=600.0)
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert env.render() is None  # no render_mode: a warning, no frame
    with pytest.raises(RuntimeError, match="reset"):
        _small().render()


def test_record_video_writes_a_file(tmp_path):
    pytest.importorskip("moviepy")
    env = gym.wrappers.RecordVideo(gym.make("sageserve_env/SageServeSmall-v0", horizon_s=600.0,
                                            render_mode="rgb_array"), str(tmp_path / "videos"), episode_trigger=lambda e: True)
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        done = terminated or truncated
    env.close()
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000


def test_human_mode_shows_the_frames_in_a_window(monkeypatch):
    pytest.importorskip("pygame")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # headless: pygame's window without a display
    env = SageServeEnv(scenario="small", horizon_s=600.0, render_mode="human")
    env.reset(seed=0)
    assert env.render() is None
    env.step(np.full(env.n_endpoints, env.max_delta))
    env.render()
    import pygame

    shown = pygame.surfarray.array3d(pygame.display.get_surface()).swapaxes(0, 1)
    expected = DashboardRenderer(env.sim_config.region_names, env.sim_config.model_names)
    assert shown.shape == expected.shape
    env.close()
    assert not pygame.display.get_init()
