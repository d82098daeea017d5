"""Dashboard frames per second, and what recording a paper-scale day as a video costs.

    python bench/bench_render.py [--hours 24] [--policy reactive] [--fidelity detailed] [--repeats 2] [--out DIR]

Runs the paper scenario (60 s decisions: 1,440 steps a day) three ways with the same seed and
policy: without rendering, rendering every step (frames per second of ``render()`` alone), and
through ``gymnasium.wrappers.RecordVideo`` (the frames plus the MP4 encoding at the end).
Prints the wall times (the best of ``--repeats`` runs each, as the machine may be shared) and the
video's overhead as a ratio to the plain episode. Target: the recorded day takes at most twice
the plain one (ratio <= 2.0) and a frame well under 10 ms.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import sageserve_env  # noqa: E402,F401  (registers the IDs)
from agents import make_policy  # noqa: E402


def episode(env: gym.Env, policy_name: str, seed: int, render: bool = False) -> tuple:
    """(wall seconds, steps, seconds spent in render()) of one episode."""
    policy = make_policy(policy_name)
    start = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    base = env.unwrapped
    policy.reset(base, seed)
    in_render, steps, done = 0.0, 0, False
    if render:
        t = time.perf_counter()
        env.render()
        in_render += time.perf_counter() - t
    while not done:
        obs, _, terminated, truncated, _ = env.step(policy.act(obs, base))
        steps += 1
        done = terminated or truncated
        if render:
            t = time.perf_counter()
            env.render()
            in_render += time.perf_counter() - t
    return time.perf_counter() - start, steps, in_render


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--policy", default="reactive")
    ap.add_argument("--fidelity", default="detailed", choices=["detailed", "fast"])
    ap.add_argument("--seed", type=int, default=1001)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each kind; the fastest counts")
    ap.add_argument("--out", default=None, help="keep the video here (default: a temporary directory)")
    args = ap.parse_args()
    kwargs = {"horizon_s": args.hours * 3600.0, "decision_interval_s": 60.0, "fidelity": args.fidelity}
    env_id = "sageserve_env/SageServe-v0"

    runs = max(args.repeats, 1)
    plain, steps, _ = min(episode(gym.make(env_id, **kwargs), args.policy, args.seed) for _ in range(runs))
    print(f"plain episode: {steps} steps in {plain:.1f} s")

    rendered, _, in_render = min(episode(gym.make(env_id, render_mode="rgb_array", **kwargs), args.policy,
                                         args.seed, render=True) for _ in range(runs))
    frame = gym.make(env_id, render_mode="rgb_array", **kwargs)
    frame.reset(seed=args.seed)
    shape = frame.render().shape
    print(f"rendering every step: {rendered:.1f} s; {steps + 1} frames of {shape[1]}x{shape[0]} in {in_render:.1f} s"
          f" = {(steps + 1) / in_render:.0f} frames/s ({1e3 * in_render / (steps + 1):.2f} ms a frame)")

    recorded = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.out or tmp)
        for i in range(runs):
            env = gym.wrappers.RecordVideo(gym.make(env_id, render_mode="rgb_array", **kwargs), str(folder / f"run{i}"),
                                           episode_trigger=lambda e: True, disable_logger=True)
            start = time.perf_counter()
            episode(env, args.policy, args.seed)
            env.close()  # writes the MP4
            recorded = min(recorded, time.perf_counter() - start)
            del env
        videos = sorted(folder.glob("run*/*.mp4"))
        size = videos[-1].stat().st_size / 1e6 if videos else 0.0
        print(f"RecordVideo episode (frames + MP4): {recorded:.1f} s, a {size:.1f} MB video"
              f"{' in ' + str(folder) if args.out else ''}")
    print(f"video overhead: {recorded / plain:.2f}x the plain episode (target <= 2.00x); "
          f"render alone {100 * in_render / plain:.0f}% of it")
    np.testing.assert_(len(videos) >= 1, "RecordVideo wrote no video")


if __name__ == "__main__":
    main()
