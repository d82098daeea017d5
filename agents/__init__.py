"""Policies behind one interface (``agents.base.Policy``): SageServe's heuristic arbiters,
baselines and learned agents. ``make_policy(name)`` builds one by name."""

from __future__ import annotations

from typing import Any, Callable, Dict

from agents.base import Policy, RandomPolicy, StaticPolicy


def _registry() -> Dict[str, Callable[..., Policy]]:
    return {
        "static": StaticPolicy,
        "random": RandomPolicy,
    }


def policy_names() -> list:
    return sorted(_registry())


def make_policy(name: str, **kwargs: Any) -> Policy:
    """Build a policy by name (``policy_names()`` lists them)."""
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown policy {name!r}; known: {sorted(registry)}")
    return registry[name](**kwargs)
