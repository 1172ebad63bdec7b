"""The training application's config: the top-level schema, and the checks of a composed config.

``conf/train.yaml`` is a defaults list of config groups (``env``, ``model``, ``algo``, ``optimizer``,
``callbacks``, ``logger``, ``trainer``), each option a ``_target_`` node; presets in ``conf/conf/`` pick
options and set sizes. The top level is typed by :class:`TrainConfig` (a wrong type or an unknown
top-level key fails in Hydra's composition); every ``_target_`` node is typed by its constructor's
signature (:mod:`rl2_lightning.components`: unknown arguments, wrong types, Enum values and ranges).
:func:`validate` runs both, and the few rules that span several components.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict

from rl2_lightning.resources import conf_dir

CONF_DIR = conf_dir()
PRESETS_DIR = CONF_DIR / "conf"
#: the agent's networks, by their state-dict prefixes
NETWORKS = ("actor", "critic")


@dataclass
class TrainConfig:
    """The whole training application: one node per component, and the run's own settings."""

    experiment: str = MISSING
    seed: int = 0
    env: Any = MISSING
    model: Any = MISSING
    algo: Any = MISSING
    optimizer: Any = MISSING
    #: name -> callback node (``null`` drops one)
    callbacks: Any = field(default_factory=dict)
    #: a logger node, or null for none
    logger: Any = None
    trainer: Any = MISSING
    #: resume: a checkpoint file, or "latest" for the newest intact checkpoint of this experiment
    ckpt_path: Optional[str] = None
    #: warm start: the networks' weights (and frames) of a training checkpoint file, or of a shipped
    #: policy (``pretrained:<preset>``), with a fresh optimizer and this run's own settings
    init_from: Optional[str] = None
    #: the networks ``init_from`` loads: ``[actor, critic]``, or ``[actor]`` to keep the critic freshly
    #: initialised (when the critic's loss or value normalisation changes, its old weights are a bad start)
    init_parts: list[str] = field(default_factory=lambda: ["actor", "critic"])
    #: read checkpoints that hold more than tensors and plain data, or name foreign ``_target_``s: only
    #: for a file you trust (it can run code)
    trust_checkpoint: bool = False
    #: where runs of all experiments live
    runs_dir: str = "runs"
    #: torch intra-op threads per process (None: torch's default). 1 is fastest when the CPU is
    #: shared: two threads spin-wait against each other when another process holds a core.
    threads: Optional[int] = None


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore (``conf/train.yaml`` extends ``train_schema``) and
    the resolvers the config uses."""
    from rl2_lightning.runs import register_resolvers

    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    register_resolvers()


def validate(cfg: DictConfig) -> None:
    """Check every component against its constructor, then the rules that span components."""
    from rl2_lightning.components import check_all

    try:
        check_all(cfg)
    except ValueError as err:
        if str(err).startswith("env.simulator.") and " is not an argument of " in str(err):
            # The usual cause: env=<family> under a preset of another family (the default preset sets bandit sizes).
            raise ValueError(f"{err}. A preset sets the sizes of its own family: with env=<family>, also pick a "
                             "preset of that family (conf=<name>, e.g. one in your --config-dir) or drop the "
                             "preset with ~conf") from None
        raise
    parts = list(cfg.get("init_parts") or [])
    if not parts or any(p not in NETWORKS for p in parts) or len(set(parts)) < len(parts):
        raise ValueError(f"init_parts={parts} is not allowed; it must name each of {list(NETWORKS)} at most once, "
                         "at least one of them")
    if cfg.threads is not None and cfg.threads < 1:
        raise ValueError(f"threads={cfg.threads} is not allowed; it must be >= 1 (or null)")
    for name, node in (cfg.callbacks or {}).items():
        if node is not None and "_target_" not in node:
            raise ValueError(f"callbacks.{name} has no _target_")
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:  # cheap (the simulator is a partial): runs the env's own rules across its arguments
        instantiate(cfg.env)
    except InstantiationException as err:
        raise (err.__cause__ if isinstance(err.__cause__, ValueError) else ValueError(str(err))) from None
    if cfg.optimizer is not None and "lr" in cfg.optimizer:
        raise ValueError(
            f"optimizer.lr={cfg.optimizer.lr} would have no effect: every parameter group has its own rate; "
            "set algo.actor_lr and algo.critic_lr instead"
        )
    num_envs = cfg.env.num_envs
    for key in ("minibatches", "critic_minibatches"):
        value = cfg.algo.get(key)
        if value is not None and value > num_envs:
            raise ValueError(
                f"algo.{key}={value} is not allowed; it must be <= env.num_envs={num_envs} "
                "(minibatches are taken along the trial axis)"
            )


def compose(overrides: list[str] = (), config_dir: str | Path | None = None) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides`` and checked (what ``train.py`` runs on);
    ``config_dir`` is a folder of the user's own config groups and presets, searched before the
    library's (what ``--config-dir`` is to ``train.py``)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    overrides = list(overrides)
    check_preset(overrides, config_dir)
    register_configs()
    if config_dir is not None:
        overrides.append(f"hydra.searchpath=[file://{Path(config_dir).expanduser().resolve()}]")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=overrides, return_hydra_config=True)
    check_preset_family(cfg.hydra.runtime.choices, config_dir)
    with open_dict(cfg):
        del cfg["hydra"]
    validate(cfg)
    return cfg


def preset_env(name: str, config_dir: str | Path | None = None) -> str | None:
    """The env option (family) a preset selects: its ``override /env: <option>``, or that of the preset
    it extends; None if it selects none."""
    import yaml

    for d in ([Path(config_dir).expanduser() / "conf"] if config_dir else []) + [PRESETS_DIR]:
        path = d / f"{name}.yaml"
        if path.is_file():
            break
    else:
        return None
    for entry in (yaml.safe_load(path.read_text()) or {}).get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                if key.replace("override", "").strip().lstrip("/") == "env":
                    return value
        elif isinstance(entry, str) and entry not in ("_self_",) and not entry.startswith("/"):
            found = preset_env(entry, config_dir)  # a preset extending another (tabular_n10_rl3)
            if found:
                return found
    return None


def check_preset_family(choices, config_dir: str | Path | None = None) -> None:
    """Refuse, in one line, a preset of one family composed with another family's env option: the preset's
    sizes (arms, envs per iteration ...) would silently override the chosen family's own."""
    preset, env = choices.get("conf"), choices.get("env")
    family = preset_env(preset, config_dir) if preset else None
    if family is not None and env is not None and family != env:
        raise ValueError(
            f"conf={preset} is a preset of env={family}, but env={env} is selected: its settings would override "
            f"{env}'s own. Pick a preset of env={env} (conf=<name>, e.g. one in your --config-dir), or drop the "
            "preset with ~conf"
        )


def preset_names(config_dir: str | Path | None = None) -> list[str]:
    """The presets (``conf/<name>.yaml`` of the config group ``conf``): the library's and the user's."""
    dirs = [PRESETS_DIR] + ([Path(config_dir).expanduser() / "conf"] if config_dir else [])
    return sorted({p.stem for d in dirs for p in d.glob("*.yaml")})


def check_preset(overrides: list[str], config_dir: str | Path | None = None) -> None:
    """One-line error for ``conf=<name>`` when no preset of that name exists (in the library, or in the
    user's ``config_dir``)."""
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+~") == "conf" and value and value not in preset_names(config_dir):
            where = f" (the library's, and {Path(config_dir) / 'conf'})" if config_dir else ""
            raise ValueError(f"conf={value} is not a preset{where}; choose one of: {', '.join(preset_names(config_dir))}")


def container(node: DictConfig | None) -> Any:
    """A config node as plain Python (resolved), as modules store it in checkpoints."""
    return None if node is None else OmegaConf.to_container(node, resolve=True)


def check_hydra_run() -> None:
    """:func:`check_preset_family` for the run Hydra composed (``train.py``), if any."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    runtime = HydraConfig.get().runtime
    user = [src.path.removeprefix("file://") for src in runtime.config_sources
            if src.provider == "command-line" and src.schema == "file"]
    check_preset_family(runtime.choices, user[0] if user else None)
