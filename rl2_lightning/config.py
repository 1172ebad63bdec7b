"""Typed configuration schemas (Hydra structured configs).

``conf/train.yaml`` is validated against :class:`TrainConfig`, so a wrong type (``algo.gamma=abc``) or
an unknown key fails when the config is composed, before any work starts, with Hydra's message
naming the key. Checks of allowed values that types cannot express live in :func:`validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig


@dataclass
class EnvConfig:
    """Task family and trial layout; family-specific sizes are left ``None`` when unused."""

    family: str = "bandit"
    episodes_per_trial: int = 10
    #: trials collected per iteration on each device (the batch is [num_envs, trial_steps])
    num_envs: int = 256
    #: > 1: the no-reset ablation (hidden state kept across that many consecutive trials)
    trials_per_reset: int = 1
    num_arms: Optional[int] = None
    num_states: Optional[int] = None
    num_actions: Optional[int] = None
    episode_steps: Optional[int] = None
    #: mazes: cells per side (5 or 9) and steps per episode (default 250 / 1000)
    size: Optional[int] = None
    horizon: Optional[int] = None
    #: mazes: env processes per device (TorchRL ParallelEnv), each stepping num_envs / workers games
    workers: int = 1


@dataclass
class ModelConfig:
    """Arguments of :func:`rl2_lightning.models.make_agent`."""

    architecture: str = "gru"
    hidden_size: int = 256
    embed_size: int = 256
    shared_trunk: bool = False
    #: LayerNorm on the memory's input and output
    layer_norm: bool = False
    #: "default" (PyTorch's) or "orthogonal" (gain sqrt 2 in the trunk, 0.01 policy head, 1 value head)
    init: str = "default"


@dataclass
class AlgoConfig:
    """PPO over whole trials."""

    gamma: float = 0.99
    lmbda: float = 0.3
    clip_epsilon: float = 0.1
    #: passes over each batch of trials
    epochs: int = 4
    #: minibatches per epoch, taken along the trial axis
    minibatches: int = 4
    entropy_coeff: float = 0.01
    #: decay entropy_coeff linearly to this value over trainer.max_epochs (None: constant)
    entropy_coeff_final: Optional[float] = None
    critic_coeff: float = 1.0
    actor_lr: float = 3e-4
    critic_lr: float = 1e-4
    max_grad_norm: float = 0.5
    #: "joint": one norm over all parameters; "separate": the actor's and the critic's each clipped
    grad_clip: str = "joint"
    normalize_advantage: bool = True
    #: "constant" or "linear" (decays to 0 over trainer.max_epochs)
    lr_schedule: str = "constant"


@dataclass
class MetaTestConfig:
    """Zero-shot evaluation of the frozen actor on a fixed task set."""

    enabled: bool = True
    every_n_epochs: int = 1
    task_set: str = "heldout"
    #: how many tasks of the set to play (the set has 1000)
    num_tasks: int = 1000
    #: "random" samples actions (the default: RL² explores through its stochastic policy); "mode" is greedy
    exploration: str = "random"
    #: overlay the classical baselines (bandits, tabular MDPs), computed once per run on the same tasks
    baselines: bool = True
    #: trials played at once (None: all num_tasks together); mazes run one engine per trial
    batch_size: Optional[int] = None
    #: episodes per meta-test trial (None: as in training); more tests extrapolation
    episodes_per_trial: Optional[int] = None
    #: mazes: log one held-out trial to TensorBoard at each meta-test (animated view beside the map,
    #: and the paths of every episode), at most this many frames per animation (0: no video). Measured:
    #: a 9x9 animation of 400 frames is 6 MB of event file, so mind the meta-test period on long runs
    video_frames: int = 200


@dataclass
class TrainerConfig:
    """Arguments of ``lightning.Trainer`` (any other Trainer argument can be added with ``+trainer.x=``)."""

    _target_: str = "lightning.Trainer"
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    max_epochs: int = 10
    #: iterations (collect + update cycles) per epoch
    limit_train_batches: int = 10
    precision: str = "32-true"
    log_every_n_steps: int = 1
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    num_sanity_val_steps: int = 0
    #: wall-clock limit of the run, "DD:HH:MM:SS" (None: none); the run stops cleanly and checkpoints
    max_time: Optional[str] = None
    #: set by train() to the run directory
    default_root_dir: Optional[str] = None


@dataclass
class TrainConfig:
    """The whole training application."""

    experiment: str = MISSING
    seed: int = 0
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    metatest: MetaTestConfig = field(default_factory=MetaTestConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    #: TensorBoard logger on/off (tests switch it off)
    logger: bool = True
    #: resume: a checkpoint file, or "latest" for the newest last.ckpt of this experiment
    ckpt_path: Optional[str] = None
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


CHOICES = {
    "env.family": ("bandit", "tabular", "riverswim", "maze"),
    "model.architecture": ("gru", "mlp"),
    "model.init": ("default", "orthogonal"),
    "algo.grad_clip": ("joint", "separate"),
    "algo.lr_schedule": ("constant", "linear"),
    "metatest.task_set": ("heldout", "tuning"),
    "metatest.exploration": ("random", "mode"),
}
POSITIVE = (
    "env.episodes_per_trial",
    "env.num_envs",
    "env.trials_per_reset",
    "model.hidden_size",
    "model.embed_size",
    "algo.epochs",
    "algo.minibatches",
    "algo.clip_epsilon",
    "algo.actor_lr",
    "algo.critic_lr",
    "algo.max_grad_norm",
    "metatest.every_n_epochs",
    "metatest.num_tasks",
    "trainer.max_epochs",
    "trainer.limit_train_batches",
)
UNIT_INTERVAL = ("algo.gamma", "algo.lmbda")


def validate(cfg: DictConfig) -> None:
    """Reject values the types allow but the application does not, with the key and what is allowed."""
    from omegaconf import OmegaConf

    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ValueError(f"{key}={value!r} is not allowed; choose one of: {', '.join(allowed)}")
    for key in POSITIVE:
        value = OmegaConf.select(cfg, key)
        if value is None or value <= 0:
            raise ValueError(f"{key}={value!r} is not allowed; it must be > 0")
    for key in ("metatest.batch_size", "metatest.episodes_per_trial", "env.size", "env.horizon", "threads"):
        value = OmegaConf.select(cfg, key)
        if value is not None and value <= 0:
            raise ValueError(f"{key}={value!r} is not allowed; it must be > 0 (or null)")
    for key in UNIT_INTERVAL:
        value = OmegaConf.select(cfg, key)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{key}={value!r} is not allowed; it must be in [0, 1]")
    if cfg.metatest.video_frames < 0:
        raise ValueError(f"metatest.video_frames={cfg.metatest.video_frames} is not allowed; it must be >= 0 (0: no video)")
    if cfg.algo.entropy_coeff < 0 or cfg.algo.critic_coeff < 0 or (cfg.algo.entropy_coeff_final or 0) < 0:
        raise ValueError("algo.entropy_coeff, algo.entropy_coeff_final and algo.critic_coeff must be >= 0")
    if cfg.env.workers < 1 or cfg.env.num_envs % cfg.env.workers:
        raise ValueError(
            f"env.workers={cfg.env.workers} is not allowed; it must be >= 1 and divide env.num_envs={cfg.env.num_envs}"
        )
    if cfg.env.workers > 1 and cfg.env.family != "maze":
        raise ValueError("env.workers > 1 is only for env.family=maze (the other families are batched tensor code)")
    if cfg.algo.minibatches > cfg.env.num_envs:
        raise ValueError(
            f"algo.minibatches={cfg.algo.minibatches} is not allowed; it must be <= env.num_envs={cfg.env.num_envs} "
            "(minibatches are taken along the trial axis)"
        )


PRESETS_DIR = Path(__file__).resolve().parents[1] / "conf" / "conf"


def check_preset(overrides: list[str]) -> None:
    """One-line error for ``conf=<name>`` when ``conf/conf/<name>.yaml`` does not exist."""
    for override in overrides:
        key, _, value = override.partition("=")
        if key == "conf" and not (PRESETS_DIR / f"{value}.yaml").is_file():
            names = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
            raise ValueError(f"conf={value} is not a preset; choose one of: {', '.join(names)}")


def env_kwargs(env: EnvConfig | DictConfig) -> dict[str, Any]:
    """Family-specific constructor arguments of the env config (the ones that are set)."""
    keys = ("num_arms", "num_states", "num_actions", "episode_steps", "size", "horizon")
    return {k: env.get(k) for k in keys if env.get(k) is not None}  # older checkpoints lack some keys
