"""Hyperparameter search over ``train.py`` with Ray Tune (Optuna's TPE sampler).

    python scripts/tune_train.py                                  # 8 trials, MaskablePPO, small env
    python scripts/tune_train.py --samples 4 --timesteps 4096 --concurrent 2 --train env_kwargs.horizon_s=3600
    python scripts/tune_train.py --address auto --samples 64 --concurrent 16   # on a Ray cluster

Each trial is one ``python train.py`` run (so it trains exactly as a hand-made run would) with the
trial's ``hyperparams.learning_rate``, ``hyperparams.ent_coef`` and ``hyperparams.gamma``, its own
``log_folder`` inside the trial's folder, and validation episodes on the ``--validation-seeds``
(seeds below 1000: evaluation seeds stay held out). A trial's score is the best mean validation
reward that ``train.py``'s evaluation recorded (``eval/evaluations.npz``); Tune's results, one
folder per trial with its model, go to ``--out``. The best trial's hyperparameters are printed as
the ``hyperparams.*`` arguments that rerun it. See ``docs/scale_out.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
METRIC = "validation_reward"


def search_space() -> Dict[str, Any]:
    """The hyperparameters searched and their ranges."""
    from ray import tune

    return {"learning_rate": tune.loguniform(1e-5, 1e-3), "ent_coef": tune.uniform(0.0, 0.05),
            "gamma": tune.choice([0.95, 0.99, 0.995])}


def train_args(args: argparse.Namespace, log_folder: Path, hyperparams: Dict[str, Any]) -> List[str]:
    """The ``train.py`` command line of one trial."""
    return [sys.executable, str(ROOT / "train.py"), f"algo={args.algo}", f"env={args.env}",
            f"n_timesteps={args.timesteps}", f"n_envs={args.n_envs}", f"seed={args.seed}", f"log_folder={log_folder}",
            f"validation_seeds=[{','.join(str(s) for s in args.validation_seeds)}]", f"eval_freq={args.eval_freq}",
            "save_freq=0", "progress_bar=false", "tensorboard=false", *args.train,
            *(f"hyperparams.{k}={v!r}" for k, v in hyperparams.items())]


def best_validation_reward(log_folder: Path) -> float:
    """The best mean reward over the validation episodes of the run under ``log_folder``."""
    found = sorted(log_folder.rglob("evaluations.npz"))
    if len(found) != 1:
        raise RuntimeError(f"expected one eval/evaluations.npz under {log_folder}, found {len(found)}: "
                           "does eval_freq fit in the run's timesteps?")
    with np.load(found[0]) as evaluations:
        return float(evaluations["results"].mean(axis=1).max())


def make_trial(args: argparse.Namespace, cwd: str):
    """Tune's function trainable: one train.py run from ``cwd`` (relative paths mean what they
    mean on the command line; Tune runs trials in their own folders), then its score."""

    def trial(hyperparams: Dict[str, Any]) -> None:
        from ray import tune

        log_folder = Path(tune.get_context().get_trial_dir()) / "logs"
        done = subprocess.run(train_args(args, log_folder, hyperparams), cwd=cwd, capture_output=True,
                              text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
        if done.returncode != 0:
            raise RuntimeError(f"train.py exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
        tune.report({METRIC: best_validation_reward(log_folder)})

    return trial


def parse(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", default="maskable_ppo")
    p.add_argument("--env", default="sageserve_env/SageServeSmall-v0")
    p.add_argument("--samples", type=int, default=8, help="trials")
    p.add_argument("--concurrent", type=int, default=2, help="trials at once")
    p.add_argument("--timesteps", type=int, default=20000, help="training steps per trial")
    p.add_argument("--n-envs", type=int, default=1, help="train.py n_envs; a trial takes as many CPUs")
    p.add_argument("--eval-freq", type=int, default=5000, help="train.py eval_freq (steps between validations)")
    p.add_argument("--validation-seeds", type=int, nargs="+", default=[900, 901])
    p.add_argument("--seed", type=int, default=0, help="train.py seed and the sampler's")
    p.add_argument("--train", nargs="*", default=[], metavar="KEY=VALUE", help="more train.py arguments")
    p.add_argument("--out", default="results/tune_train", help="Tune's experiment folder")
    p.add_argument("--address", default=None, help="a Ray cluster (default: a local Ray)")
    args = p.parse_args(argv)
    for name in ("samples", "concurrent", "timesteps", "n_envs", "eval_freq"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.eval_freq > args.timesteps:
        p.error(f"--eval-freq {args.eval_freq} exceeds --timesteps {args.timesteps}: no validation would run")
    if any(s < 0 or s >= 1000 for s in args.validation_seeds):
        p.error("--validation-seeds must be in [0, 1000): seeds from 1000 up are held out for evaluation")
    return args


def main(argv: List[str] = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    ray.init(address=args.address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        tuner = tune.Tuner(
            tune.with_resources(make_trial(args, os.getcwd()), {"cpu": args.n_envs}),
            param_space=search_space(),
            tune_config=tune.TuneConfig(metric=METRIC, mode="max", num_samples=args.samples,
                                        max_concurrent_trials=args.concurrent, search_alg=OptunaSearch(seed=args.seed)),
            run_config=tune.RunConfig(name="tune_train", storage_path=str(Path(args.out).resolve()), verbose=1))
        results = tuner.fit()
        if results.errors:
            print(f"tune_train: {len(results.errors)} of {len(results)} trials failed; first: {results.errors[0]}",
                  file=sys.stderr)
        if len(results.errors) == len(results):
            return 1
        best = results.get_best_result()
        table = results.get_dataframe().sort_values(METRIC, ascending=False)
        print(table[[METRIC, *(f"config/{k}" for k in search_space())]].to_string(index=False))
        print(f"best {METRIC} {best.metrics[METRIC]:.4g}: python train.py algo={args.algo} env={args.env} "
              + " ".join(f"hyperparams.{k}={v:.6g}" for k, v in best.config.items()))
        print(f"trials (train.py runs under <trial>/logs) in {results.experiment_path}")
        return 1 if results.errors else 0
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
