"""Policies behind one interface (``agents.base.Policy``): SageServe's heuristic arbiters,
baselines and learned agents.

A policy is a config entry: ``{"_target_": "module:Class" (or "module.Class"), knob: value, ...}``;
the knobs are the class's keyword arguments. ``policy_table()`` gives the registry's short
aliases (``reactive``, ``lt_ua``...) as such entries, with every knob at its default: the
``policy`` table of the command lines (``policy.reactive.up_threshold=0.6``). ``make_policy(spec)``
builds one from an alias, an entry, ``module:Class``, ``rl`` or ``rl_v1`` (the shipped trained agents) or
``ckpt:PATH`` (any model saved by ``train.py``).
"""

from __future__ import annotations

import inspect
import pkgutil
import typing
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Union

from agents.base import Policy, RandomPolicy, StaticPolicy
from agents.chiron import ChironPolicy
from agents.demand import DemandPolicy
from agents.long_term import LongTermPolicy
from agents.reactive import ReactivePolicy

SHIPPED_DIR = Path(__file__).resolve().parent / "trained"
# the trained agents that ship (docs/results.md): ``rl`` on the v0 paper day, ``rl_v1``, ``rl_v1_mix``, ``rl_v1_mix3``, ``rl_v1_mix4``, ``rl_v1_mix5``, ``rl_v1_scratch``, ``rl_v1_budget``, ``rl_v1_transfer``, ``rl_v1_demand``, ``rl_v1_headroom``, ``rl_v1_headroom96`` on the v1 tasks and ``rl_v1_burst`` on Burst
SHIPPED_AGENTS = {"rl": "rl_agent.zip", "rl_v1": "rl_v1.zip", "rl_v1_mix": "rl_v1_mix.zip", "rl_v1_mix3": "rl_v1_mix3.zip",
                  "rl_v1_mix4": "rl_v1_mix4.zip",
                  "rl_v1_mix5": "rl_v1_mix5.zip", "rl_v1_scratch": "rl_v1_scratch.zip",
                  "rl_v1_budget": "rl_v1_budget.zip", "rl_v1_transfer": "rl_v1_transfer.zip",
                  "rl_v1_burst": "rl_v1_burst.zip", "rl_v1_demand": "rl_v1_demand.zip",
                  "rl_v1_headroom": "rl_v1_headroom.zip", "rl_v1_headroom96": "rl_v1_headroom96.zip"}
TARGET = "_target_"
PolicySpec = Union[str, Mapping[str, Any]]


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
        "demand": DemandPolicy,
    }


def policy_names() -> list:
    return sorted(_registry()) + sorted(SHIPPED_AGENTS)


def policy_table() -> Dict[str, Dict[str, Any]]:
    """Each registry alias as a config entry: its class as ``_target_``, then every keyword
    knob with its default (the alias's fixed ones, such as ``mode``, first)."""
    table = {}
    for name, maker in _registry().items():
        cls, fixed = (maker.func, dict(maker.keywords)) if isinstance(maker, partial) else (maker, {})
        entry: Dict[str, Any] = {TARGET: f"{cls.__module__}:{cls.__qualname__}", **fixed}
        for knob, param in inspect.signature(cls).parameters.items():
            if knob not in fixed and param.default is not inspect.Parameter.empty:
                entry[knob] = param.default
        table[name] = entry
    return table


def shipped_agent_path(name: str = "rl") -> Path:
    """A trained agent that ships with the project, by its policy name (``SHIPPED_AGENTS``)."""
    return SHIPPED_DIR / SHIPPED_AGENTS[name]


def policy_class(target: str, name: str) -> type:
    """The ``Policy`` subclass named by ``target`` (``module:Class`` or ``module.Class``);
    a ValueError naming the policy ``name`` when it cannot be imported or is no policy."""
    try:
        cls = pkgutil.resolve_name(target)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"policy {name!r}: cannot import {target!r}: {type(exc).__name__}: {exc}") from None
    if not (inspect.isclass(cls) and issubclass(cls, Policy)):
        raise ValueError(f"policy {name!r}: {target!r} is not a subclass of agents.base.Policy")
    return cls


def _is_target(spec: str) -> bool:
    return ":" in spec or "." in spec


def check_policy_spec(spec: PolicySpec, name: str | None = None) -> None:
    """Raise ValueError unless ``spec`` names a policy that can be built (for an entry or a
    ``module:Class``: the class imports and takes every knob, each of its declared type)."""
    if isinstance(spec, Mapping):
        _knobs_of(spec, name or str(spec.get(TARGET)))
    elif spec.startswith("ckpt:"):
        path = Path(spec[len("ckpt:"):])
        if not path.exists():
            raise ValueError(f"policy {spec!r}: checkpoint {str(path)!r} does not exist")
        if not path.is_file():
            raise ValueError(f"policy {spec!r}: checkpoint {str(path)!r} is not a file (expected a model .zip)")
    elif spec in SHIPPED_AGENTS:
        if not shipped_agent_path(spec).exists():
            raise ValueError(f"policy {spec!r}: the shipped agent {shipped_agent_path(spec)} is missing")
    elif spec in _registry():
        return
    elif _is_target(spec):
        policy_class(spec, spec)
    else:
        raise ValueError(f"unknown policy {spec!r}; known: {policy_names()}, ckpt:PATH or module:Class")


def _knobs_of(entry: Mapping[str, Any], name: str) -> tuple:
    """(class, knobs) of a config entry, every knob checked against the class's signature."""
    if not isinstance(entry.get(TARGET), str):
        raise ValueError(f"policy {name!r}: the entry needs '{TARGET}: module:Class', got {dict(entry)!r}")
    cls = policy_class(entry[TARGET], name)
    knobs = {k: v for k, v in entry.items() if k != TARGET}
    params = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        known = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = sorted(set(knobs) - set(known))
        if unknown:
            raise ValueError(f"policy {name!r} ({entry[TARGET]}) has no knob(s) {unknown}; knobs: {known}")
    hints = typing.get_type_hints(cls.__init__)
    for knob, value in knobs.items():
        if knob in hints and not _fits(value, hints[knob]):
            raise ValueError(f"policy {name!r} knob {knob!r} = {value!r}: must be of type {_type_name(hints[knob])}")
    return cls, knobs


SIMPLE_TYPES = (bool, int, float, str, type(None))


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the simple type ``hint`` (int, float, str, bool, None or an
    Optional/Union of them; an int is a float); other hints are not checked."""
    allowed = typing.get_args(hint) if typing.get_origin(hint) is Union else (hint,)
    if not all(t in SIMPLE_TYPES for t in allowed):
        return True
    for t in allowed:
        if t is type(None) and value is None:
            return True
        if t is bool and isinstance(value, bool):
            return True
        if t in (int, float) and isinstance(value, int if t is int else (int, float)) and not isinstance(value, bool):
            return True
        if t is str and isinstance(value, str):
            return True
    return False


def _type_name(hint: Any) -> str:
    allowed = typing.get_args(hint) if typing.get_origin(hint) is Union else (hint,)
    return " or ".join("null" if t is type(None) else getattr(t, "__name__", str(t)) for t in allowed)


def make_policy(spec: PolicySpec, name: str | None = None, **kwargs: Any) -> Policy:
    """Build a policy from a registry alias, a config entry (``{"_target_": ..., knob: value}``),
    ``module:Class``, a shipped agent (``rl``, ``rl_v1``) or ``ckpt:PATH``; ``kwargs`` set knobs on top. ``name`` names
    the policy in errors (default: the spec)."""
    check_policy_spec(spec, name)
    if isinstance(spec, str) and (spec in SHIPPED_AGENTS or spec.startswith("ckpt:")):
        from agents.learned import LearnedPolicy

        path = shipped_agent_path(spec) if spec in SHIPPED_AGENTS else Path(spec[len("ckpt:"):])
        return LearnedPolicy(path, name=spec, **kwargs)
    if isinstance(spec, str):
        entry = policy_table()[spec] if spec in _registry() else {TARGET: spec}
    else:
        entry = dict(spec)
    cls, knobs = _knobs_of({**entry, **kwargs}, name or (spec if isinstance(spec, str) else str(entry[TARGET])))
    return cls(**knobs)
