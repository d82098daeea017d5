"""The Hydra front of the command lines: ``evaluate.py``, ``train.py`` and ``sageserve-env simulate``.

Each command is a Hydra app: a dataclass schema (a structured config, stored in Hydra's
``ConfigStore`` as ``<command>_schema``) under the YAML defaults ``configs/<command>.yaml``. One
grammar for all: ``key=value`` overrides, ``-m`` multirun over any key (``seeds=[1],[2]``,
``policy.reactive.up_threshold=0.4,0.6``), ``--cfg job`` prints the resolved config, ``--help``.
Config groups: ``policy`` (the table of policies and their knobs, ``policy/baselines`` holding the
registry's aliases), ``reward`` (the presets of ``configs/rewards.yaml``: ``reward=slo``,
``reward.iw_slo_miss=2``), ``env_options`` (the typed env options of ``train.py``'s ``env_kwargs``)
and ``hyperparams`` (``train.py``).

Hydra's own outputs are set by ``configs/hydra/output/here.yaml``: the working directory is never
changed and a single run writes nothing of Hydra's, so relative paths resolve from where the
command was started and outputs land where ``out=`` (``log_folder=``) says; a multirun gives each
job the folder ``<out>/<overrides of the job>`` (``multirun.yaml`` beside them records the sweep).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sageserve_env.config import CONFIG_DIR, ConfigError, EnvConfig, unset

COMMANDS_DIR = CONFIG_DIR / "commands"  # Hydra's config dir: the commands' defaults and groups

HYDRA_VERSION_BASE = "1.3"


@dataclass(frozen=True)
class Job:
    """What a command needs to know of its Hydra job: its overrides (``key=value`` as given), the
    top-level keys they set and, in a multirun, the job's own output folder."""

    overrides: tuple
    output_dir: Optional[str] = None

    @property
    def given(self) -> frozenset:
        """The top-level keys the overrides set (``+a.b=1`` -> ``a``)."""
        return frozenset(o.lstrip("+~").split("=")[0].split(".")[0] for o in self.overrides)


def register_configs(config_name: str, schema: type, groups: Sequence[tuple] = ()) -> None:
    """Store the command's schema, its own ``groups`` ((group, name, node)) and the shared
    config groups in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    from agents import policy_table
    from sageserve_env.env.sageserve_env import reward_presets

    store = ConfigStore.instance()
    store.store(name=f"{config_name}_schema", node=schema)
    store.store(group="policy", name="baselines", node=policy_table(), package="policy")
    for name, weights in reward_presets().items():
        store.store(group="reward", name=name, node=weights)
    store.store(group="env_options", name="given", node=unset(EnvConfig))
    for group, name, node in groups:
        store.store(group=group, name=name, node=node)


def _without_missing(value: Any) -> Any:
    """``value`` (plain containers) without the mappings' missing (``???``) entries: options of
    a partly set node that were not given."""
    if isinstance(value, dict):
        return {k: _without_missing(v) for k, v in value.items() if v != MISSING}
    if isinstance(value, list):
        return [_without_missing(v) for v in value]
    return value


def to_schema(cfg: DictConfig, schema: type) -> Any:
    """The composed config as an instance of ``schema``; a value still missing (a mandatory
    key not given) is a ConfigError naming the key."""
    try:
        data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
        data.pop("hydra", None)
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), _without_missing(data)))
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"config key '{key}': {str(exc).splitlines()[0]}") from None


def _unparsable(argv: Sequence[str]) -> Optional[str]:
    """Why the first override of ``argv`` that is not Hydra's grammar fails (naming it), or None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for item in argv:
        if item.startswith("-") or "=" not in item:  # Hydra's flags and their values
            continue
        try:
            parser.parse_overrides([item])
        except OverrideParseException as exc:
            why = str(exc).splitlines()[0]
            return (f"override {item!r} is not Hydra's key=value grammar: {why} "
                    "(quote a value holding '=', ',' or spaces)")
    return None


def compose(config_name: str, schema: type, overrides: Sequence[str] = (), groups: Sequence[tuple] = ()) -> tuple:
    """(config, Job) of a command without running it (Hydra's compose API); a bad key or value
    is a ConfigError with Hydra's message."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    bad = _unparsable(overrides)
    if bad:
        raise ConfigError(bad)
    register_configs(config_name, schema, groups)
    try:
        with initialize_config_dir(config_dir=str(COMMANDS_DIR), version_base=HYDRA_VERSION_BASE):
            cfg = hydra_compose(config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(" ".join(str(exc).split())) from None
    return to_schema(cfg, schema), Job(tuple(overrides))


def run(config_name: str, schema: type, task: Callable[[Any, Job], int], argv: Sequence[str], prog: str,
        groups: Sequence[tuple] = ()) -> int:
    """Run ``task(cfg, job)`` as the Hydra app ``config_name`` with the command line ``argv``
    (once, or once per job with ``-m``). Returns the exit code: the largest of the jobs', 2 when
    Hydra refused the command line (it printed why), 0 for ``--cfg``/``--help``."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    codes: List[int] = []
    started: List[bool] = []

    def job(raw: DictConfig) -> None:
        started.append(True)
        hc = HydraConfig.get()
        output_dir = hc.runtime.output_dir if hc.mode == RunMode.MULTIRUN else None
        try:
            cfg = to_schema(raw, schema)
        except ConfigError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            codes.append(2)
            return
        codes.append(task(cfg, Job(tuple(hc.overrides.task), output_dir)))

    bad = _unparsable(argv)
    if bad:
        print(f"{prog}: error: {bad}", file=sys.stderr)
        return 2
    register_configs(config_name, schema, groups)
    app = hydra.main(config_path=str(COMMANDS_DIR), config_name=config_name, version_base=HYDRA_VERSION_BASE)(job)
    saved = sys.argv
    sys.argv = [prog, *argv]  # hydra.main reads its command line from sys.argv
    try:
        app()
    except SystemExit as exc:  # Hydra's exit after printing a composition error or its help
        if exc.code not in (0, None):
            return 1 if started else 2
    except ValueError as exc:  # flags that exclude each other (--cfg with -m...)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved
    return max(codes, default=0)
