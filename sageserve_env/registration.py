"""Gymnasium IDs: ``sageserve_env/SageServe-v0`` (paper scale), ``sageserve_env/SageServeSmall-v0``
and ``sageserve_env/SageServe-<preset>-v0`` for every preset in ``configs/scenarios``; each also as
``...-fast-v0`` (``SageServe-fast-v0``, ``SageServeSmall-fast-v0``...), the same world in the fast
fidelity (token flows per tick, ``sageserve_env/sim/flow.py``) for training; and
``...-fast-v1`` (``SageServe-fast-v1``, ``SageServeSmall-fast-v1``...), the fast fidelity
vectorized over worlds (``sageserve_env/sim/vector.py``): ``gymnasium.make_vec(ID, num_envs=N,
vectorization_mode="vector_entry_point")`` gives ``SageServeVectorEnv``, ``gymnasium.make(ID)``
its one-world case.

The v1 benchmark tasks (``sageserve_env.tasks``: ``Day-v1``, ``DayLight-v1``, ``Week-v1``,
``Burst-v1``, ``Outage-v1``, detailed fidelity) are registered as ``sageserve_env/<Task>-v1``, and
the same specs in the fast fidelity as ``sageserve_env/<Task>-fast-v1`` (``SageServeEnv`` with
``FlowSimulator``, one world), and for training as ``sageserve_env/<Task>-vec-v1`` (``Day``,
``DayLight``, ``Week``, ``Burst``): the vectorized fast fidelity drawing the task's v1 process per
world, ``make_vec`` gives ``SageServeVectorEnv`` and ``make`` ``SageServeFastEnv``, with the
spaces of ``<Task>-v1``. Outage has no ``-vec`` ID: the vectorized fidelity simulates no faults.

Each ID is also registered without the namespace, so ``gymnasium.make("sageserve_env:SageServe-v0")``
works in a fresh subprocess (the ``module:`` prefix imports this package first).
"""

from gymnasium.envs.registration import register, registry

from sageserve_env.config import preset_names

ENTRY_POINT = "sageserve_env.env.sageserve_env:SageServeEnv"
V1_ENTRY_POINT = "sageserve_env.env.vector_env:SageServeFastEnv"
V1_VECTOR_ENTRY_POINT = "sageserve_env.env.vector_env:SageServeVectorEnv"


def env_ids() -> dict:
    """Every registered ID (without namespace) and the kwargs it fixes."""
    scenarios = {"SageServe": "paper", "SageServeSmall": "small"}
    scenarios.update({f"SageServe-{preset}": preset for preset in preset_names()})
    ids = {}
    for name, scenario in scenarios.items():
        ids[f"{name}-v0"] = {"scenario": scenario}
        ids[f"{name}-fast-v0"] = {"scenario": scenario, "fidelity": "fast"}
    from sageserve_env.tasks import tasks

    for suite in ("v1", "v1-fast"):
        for env_id, spec in tasks(suite).items():
            ids[env_id] = spec.env_kwargs()
    return ids


def vector_env_ids() -> dict:
    """Every vectorized fast fidelity ID (``...-fast-v1``, ``<Task>-vec-v1``) without namespace
    and the kwargs it fixes."""
    from sageserve_env.tasks import tasks

    ids = {name.replace("-fast-v0", "-fast-v1"): dict(kwargs)
           for name, kwargs in env_ids().items() if name.endswith("-fast-v0")}
    ids.update({env_id: spec.env_kwargs() for env_id, spec in tasks("v1-vec").items()})
    return ids


def register_envs() -> None:
    for name, kwargs in env_ids().items():
        for env_id in (f"sageserve_env/{name}", name):
            if env_id not in registry:
                register(id=env_id, entry_point=ENTRY_POINT, kwargs=dict(kwargs), disable_env_checker=False)
    for name, kwargs in vector_env_ids().items():
        for env_id in (f"sageserve_env/{name}", name):
            if env_id not in registry:
                register(id=env_id, entry_point=V1_ENTRY_POINT, vector_entry_point=V1_VECTOR_ENTRY_POINT,
                         kwargs=dict(kwargs), disable_env_checker=False)
