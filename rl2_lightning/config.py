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
from omegaconf import MISSING, DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
PRESETS_DIR = CONF_DIR / "conf"


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

    check_all(cfg)
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


def compose(overrides: list[str] = ()) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides`` and checked (what ``train.py`` runs on)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    check_preset(list(overrides))
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=list(overrides))
    validate(cfg)
    return cfg


def check_preset(overrides: list[str]) -> None:
    """One-line error for ``conf=<name>`` when ``conf/conf/<name>.yaml`` does not exist."""
    for override in overrides:
        key, _, value = override.partition("=")
        if key == "conf" and not (PRESETS_DIR / f"{value}.yaml").is_file():
            names = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
            raise ValueError(f"conf={value} is not a preset; choose one of: {', '.join(names)}")


def container(node: DictConfig | None) -> Any:
    """A config node as plain Python (resolved), as modules store it in checkpoints."""
    return None if node is None else OmegaConf.to_container(node, resolve=True)
