"""Where independent jobs (evaluation episodes) run: a local process pool or Ray tasks.

``run_jobs(fn, jobs, launcher="pool" | "ray", ...)`` calls ``fn(job)`` for every job and returns the
results in job order, whatever order they finish in. ``pool`` is a ``ProcessPoolExecutor`` of
``workers`` spawned processes on this machine; ``ray`` submits one Ray task (one CPU) per job to a
local Ray started for the run (``RayConfig.num_cpus`` CPUs, the machine's by default) or to the
cluster at ``RayConfig.address``. The first job that raises stops the run: the jobs not started
are cancelled and ``JobFailed`` names the job and carries the job's own exception (not Ray's
wrapper), so both launchers report a failure alike. See ``docs/scale_out.md``.
"""

from __future__ import annotations

import importlib.util
import logging
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Callable, Dict, List, Optional, Sequence

from tqdm import tqdm

from sageserve_env.config import ConfigError

LAUNCHERS = ("pool", "ray")


@dataclass
class RayConfig:
    """How ``launcher=ray`` reaches Ray."""

    address: Optional[str] = None  # a running cluster ("auto", "ray://head:10001"); None: a local Ray for the run
    num_cpus: Optional[int] = None  # the local Ray's CPUs (None: the machine's); not with an address


class JobFailed(Exception):
    """Job ``index`` (``job``) raised ``error``, its own exception as ``fn`` raised it."""

    def __init__(self, index: int, job: Any, error: BaseException) -> None:
        super().__init__(f"job {index} failed: {type(error).__name__}: {error}")
        self.index, self.job, self.error = index, job, error


def check_launcher(launcher: str, ray: RayConfig) -> None:
    """A ConfigError naming the option unless ``launcher`` and ``ray`` make sense together."""
    if launcher not in LAUNCHERS:
        raise ConfigError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if ray.num_cpus is not None and (isinstance(ray.num_cpus, bool) or ray.num_cpus < 1):
        raise ConfigError(f"ray.num_cpus must be an integer >= 1 (or null: the machine's CPUs), got {ray.num_cpus!r}")
    if ray.address is not None and not ray.address.strip():
        raise ConfigError("ray.address must name a cluster (auto, host:port or ray://host:port) or be null")
    if ray.address is not None and ray.num_cpus is not None:
        raise ConfigError(f"ray.num_cpus sizes a local Ray; a cluster (ray.address={ray.address!r}) has its own "
                          "CPUs: drop one of the two")
    if launcher == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("launcher=ray needs Ray: pip install 'ray[default]'")


def run_jobs(fn: Callable[[Any], Any], jobs: Sequence[Any], launcher: str = "pool", workers: int = 1,
             ray_config: Optional[RayConfig] = None, desc: str = "jobs") -> List[Any]:
    """``[fn(job) for job in jobs]``, run in parallel by ``launcher``, with a progress bar.

    ``fn`` must be picklable (a module-level function; on Ray, of a module the workers can import,
    or of the driver's ``__main__``) and so must the jobs and results. Raises ``JobFailed`` for the
    first job that raises (or whose worker dies), after cancelling the jobs not yet started.
    """
    ray_config = ray_config or RayConfig()
    check_launcher(launcher, ray_config)
    if not jobs:
        return []
    progress = tqdm(total=len(jobs), desc=desc, unit="ep")
    try:
        if launcher == "pool":
            return _on_pool(fn, jobs, workers, progress)
        return _on_ray(fn, jobs, ray_config, progress)
    finally:
        progress.close()


def _on_pool(fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int, progress: tqdm) -> List[Any]:
    results: Dict[int, Any] = {}
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
        index = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
        pending = set(index)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in sorted(done, key=index.get):
                i = index[future]
                error = future.exception()
                if error is not None:
                    for other in pending:
                        other.cancel()
                    raise JobFailed(i, jobs[i], error)
                results[i] = future.result()
                progress.update()
    return [results[i] for i in range(len(jobs))]


def _on_ray(fn: Callable[[Any], Any], jobs: Sequence[Any], config: RayConfig, progress: tqdm) -> List[Any]:
    import ray
    from ray.exceptions import RayError, RayTaskError

    started = not ray.is_initialized()
    if started:  # a Ray already initialized by the caller (a notebook, a test) is used as it is
        ray.init(address=config.address, num_cpus=config.num_cpus, include_dashboard=False,
                 logging_level=logging.WARNING)
    try:
        task = ray.remote(num_cpus=1)(_call)
        index = {task.remote(fn, job): i for i, job in enumerate(jobs)}
        pending = list(index)
        results: Dict[int, Any] = {}
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            i = index[done[0]]
            try:
                results[i] = ray.get(done[0])
            except RayError as exc:  # the job raised (RayTaskError), or its worker or node died
                for other in pending:
                    ray.cancel(other, force=True)
                own = exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc
                raise JobFailed(i, jobs[i], own) from None
            progress.update()
        return [results[i] for i in range(len(jobs))]
    finally:
        if started:
            ray.shutdown()


def _call(fn: Callable[[Any], Any], job: Any) -> Any:
    """One Ray task: ``fn(job)`` (any picklable callable, as on the pool, builtins too)."""
    return fn(job)
