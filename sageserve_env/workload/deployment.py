"""Deployments: which endpoint serves a request of a given model and tier.

``unified`` (SageServe's proposal): every (region, model) endpoint serves the model's IW and NIW
requests; NIW work is fed to its instances while their memory utilization is low.

``siloed`` (the original simulator's ``us3-new-dp`` controller, the baseline of the paper's
motivating comparison): every model has, per region, a prod endpoint ``<model>-p`` that serves its
IW requests and a dev endpoint ``<model>-d`` that serves its NIW requests (batch jobs and dev
work), each with its own instances (``deployment.prod_instances``/``dev_instances``, or
``scaling.initial_overrides`` per "region/<model>-p"), its own scaling and its own routing. As in
the original, the two are different models to the fleet: a spot server donated by ``A-d`` holds
``A-d``, so ``A-p`` takes it only at scaling level 2, with ``spin_up_s``.

Both are one mechanism seen from two sides:

- ``deploy(cfg)`` lays the config's ``models`` out as the deployment's endpoints (a siloed one
  gets ``A-p``, ``B-p``, ..., ``A-d``, ``B-d``, ... with ``serves`` and ``tier`` set). Everything
  downstream (fleet, both simulators, env, policies, outputs) sees endpoints like any other.
- ``assign(cfg, workload)`` relabels a workload whose requests name catalogue models (traces, the
  generator) onto those endpoints by tier. Then the simulators route as always: an IW request to
  the first region of its priority list whose endpoint of its (prod) model has room, an NIW one to
  its home region's (dev) endpoint.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Dict, List, Tuple

import numpy as np

from sageserve_env.workload.workload import IW, NIW, TIER_NAMES, Workload, WorkloadError

if TYPE_CHECKING:
    from sageserve_env.config import ModelConfig, SimConfig

DEPLOYMENTS = ("unified", "siloed")
SUFFIXES = {IW: "-p", NIW: "-d"}  # prod and dev endpoints, named as in the original's configs


def deploy(cfg: "SimConfig") -> "SimConfig":
    """``cfg`` with ``models`` laid out for ``cfg.deployment.mode`` (in place; returned).

    Idempotent: endpoints an earlier call made (``serves`` set) are first folded back into their
    catalogue model, so a siloed config loaded again, or switched back to ``unified``, is laid
    out afresh. An unknown mode is left for ``validate`` to report."""
    if cfg.deployment.mode not in DEPLOYMENTS:
        return cfg
    catalogue: Dict[str, "ModelConfig"] = {}
    for name, model in cfg.models.items():
        catalogue.setdefault(model.serves or name, dataclasses.replace(model, serves="", tier=""))
    if cfg.deployment.mode == "unified":
        cfg.models = catalogue
        return cfg
    cfg.models = {f"{name}{SUFFIXES[tier]}": dataclasses.replace(model, serves=name, tier=TIER_NAMES[tier])
                  for tier in (IW, NIW) for name, model in catalogue.items()}
    return cfg


def endpoint_table(cfg: "SimConfig") -> Dict[Tuple[str, int], int]:
    """(catalogue model, tier) -> index into ``cfg.model_names`` of the endpoint model serving it."""
    table: Dict[Tuple[str, int], int] = {}
    for m, (name, model) in enumerate(cfg.models.items()):
        tiers = (IW, NIW) if not model.tier else (TIER_NAMES.index(model.tier),)
        for tier in tiers:
            table[(model.serves or name, tier)] = m
    return table


def assign(cfg: "SimConfig", workload: Workload) -> Workload:
    """``workload`` with every request's model replaced by the endpoint model that serves its
    (model, tier) in ``cfg``'s deployment; unchanged in a unified one. A request may already name
    an endpoint model (a workload assigned before): then its tier must be that endpoint's. A
    ``WorkloadError`` names the first request that no endpoint serves."""
    if all(not m.serves for m in cfg.models.values()):
        return workload
    names = list(cfg.model_names)
    if tuple(workload.models) == tuple(names) and _tiers_match(cfg, workload):
        return workload
    table = endpoint_table(cfg)
    # codes[model of the workload, tier] -> endpoint model index, -1 where none serves it
    codes = np.full((len(workload.models), len(TIER_NAMES)), -1, dtype=np.int64)
    for w, name in enumerate(workload.models):
        for tier in (IW, NIW):
            if (name, tier) in table:
                codes[w, tier] = table[(name, tier)]
            elif name in cfg.models and cfg.models[name].tier == TIER_NAMES[tier]:
                codes[w, tier] = names.index(name)
    model = codes[workload.model, workload.tier]
    if (model < 0).any():
        row = int(np.argmax(model < 0))
        raise WorkloadError(
            f"{workload.source}: row {row}, model {workload.models[workload.model[row]]!r} tier "
            f"{TIER_NAMES[workload.tier[row]]}: no endpoint of the {cfg.deployment.mode} deployment serves it "
            f"(endpoints {names}, serving models {cfg.workload_models})")
    meta = {**workload.meta, "deployment": cfg.deployment.mode}
    return dataclasses.replace(workload, models=tuple(names), model=model.astype(np.int16), meta=meta)


def _tiers_match(cfg: "SimConfig", workload: Workload) -> bool:
    """True when every request of ``workload`` (already over the endpoint models) has the tier its
    endpoint serves."""
    served = np.array([TIER_NAMES.index(m.tier) if m.tier else -1 for m in cfg.models.values()])
    tier = served[workload.model]
    return bool(((tier < 0) | (tier == workload.tier)).all())


def assign_history(cfg: "SimConfig", history: np.ndarray) -> np.ndarray:
    """Per-minute IW demand (minutes, regions, catalogue models) moved onto the endpoints
    (minutes, regions, endpoint models): a prod endpoint gets its model's, a dev endpoint none
    (it serves no IW request)."""
    if all(not m.serves for m in cfg.models.values()):
        return history
    catalogue: List[str] = cfg.workload_models
    out = np.zeros(history.shape[:2] + (len(cfg.models),))
    for (name, tier), m in endpoint_table(cfg).items():
        if tier == IW:
            out[:, :, m] = history[:, :, catalogue.index(name)]
    return out
