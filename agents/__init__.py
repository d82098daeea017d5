"""Policies behind one interface (``agents.base.Policy``): SageServe's heuristic arbiters,
baselines and learned agents. ``make_policy(spec)`` builds one from a name, ``rl`` (the shipped
trained agent) or ``ckpt:PATH`` (any model saved by ``train.py``)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict

from agents.base import Policy, RandomPolicy, StaticPolicy
from agents.chiron import ChironPolicy
from agents.long_term import LongTermPolicy
from agents.reactive import ReactivePolicy

SHIPPED_DIR = Path(__file__).resolve().parent / "trained"


def _registry() -> Dict[str, Callable[..., Policy]]:
    return {
        "static": StaticPolicy,
        "random": RandomPolicy,
        "reactive": ReactivePolicy,
        "lt_i": partial(LongTermPolicy, mode="lt_i"),
        "lt_u": partial(LongTermPolicy, mode="lt_u"),
        "lt_ua": partial(LongTermPolicy, mode="lt_ua"),
        "oracle": partial(LongTermPolicy, mode="oracle"),
        "chiron": ChironPolicy,
    }


def policy_names() -> list:
    return sorted(_registry()) + ["rl"]


def shipped_agent_path() -> Path:
    """The trained agent that ships with the project (policy name ``rl``)."""
    return SHIPPED_DIR / "rl_agent.zip"


def check_policy_spec(spec: str) -> None:
    """Raise ValueError unless ``spec`` names a policy that can be built."""
    if spec.startswith("ckpt:"):
        path = Path(spec[len("ckpt:"):])
        if not path.exists():
            raise ValueError(f"policy {spec!r}: checkpoint {str(path)!r} does not exist")
        if not path.is_file():
            raise ValueError(f"policy {spec!r}: checkpoint {str(path)!r} is not a file (expected a model .zip)")
    elif spec == "rl":
        if not shipped_agent_path().exists():
            raise ValueError(f"policy 'rl': the shipped agent {shipped_agent_path()} is missing")
    elif spec not in _registry():
        raise ValueError(f"unknown policy {spec!r}; known: {policy_names()} or ckpt:PATH")


def make_policy(spec: str, **kwargs: Any) -> Policy:
    """Build a policy from a registry name, ``rl`` or ``ckpt:PATH``."""
    check_policy_spec(spec)
    if spec == "rl" or spec.startswith("ckpt:"):
        from agents.learned import LearnedPolicy

        path = shipped_agent_path() if spec == "rl" else Path(spec[len("ckpt:"):])
        return LearnedPolicy(path, name=spec, **kwargs)
    return _registry()[spec](**kwargs)
