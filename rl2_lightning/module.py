"""The RL² LightningModule: an agent (encoder -> memory -> heads) and an algorithm, built from config.

One iteration (= one ``training_step``) reads top to bottom: the batch of whole trials collected by the
datamodule -> the algorithm's advantages (critic over each whole trial, GAE) -> the algorithm's update
(PPO: epochs x minibatches of trials; TRPO: one natural-gradient step and the critic's fit) -> log.
Every update averages its gradients over ranks, so that every rank applies the same step.

The hyperparameters are the composed config's ``env``, ``model``, ``algo`` and ``optimizer`` nodes, so a
checkpoint rebuilds its agent through the same ``_target_`` nodes (:meth:`RL2Module.load_from_checkpoint`).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from hydra.utils import instantiate
from lightning import LightningModule
from tensordict import TensorDictBase

from rl2_lightning.algos.base import LRSchedule, UpdateContext

#: optimizer used when a config (or a checkpoint) names none
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True, "eps": 1e-5}


class RL2Module(LightningModule):
    """RL² agent + training algorithm.

    Args:
        env: the ``env`` node (:class:`~rl2_lightning.envs.TrialEnvFactory`): sizes the networks.
        model: the ``model`` node (a ``_partial_`` of :func:`~rl2_lightning.models.make_agent`).
        algo: the ``algo`` node (a ``_partial_`` of a :class:`~rl2_lightning.algos.base.TrialAlgorithm`).
        optimizer: the ``optimizer`` node (a ``_partial_`` of a ``torch.optim`` class), built over the
            algorithm's parameter groups.
        max_epochs: length of the run, for the schedules.
    """

    def __init__(self, env: dict, model: dict, algo: dict, optimizer: dict | None = None, max_epochs: int = 1):
        super().__init__()
        env, model, algo = upgrade_hparams(env, model, algo)
        optimizer = dict(optimizer or DEFAULT_OPTIMIZER)
        self.save_hyperparameters({"env": env, "model": model, "algo": algo, "optimizer": optimizer, "max_epochs": max_epochs})
        self.automatic_optimization = False
        self.env = instantiate(env)
        spec_env = self.env.spec_env()
        self.agent = instantiate(model)(spec_env, max_steps=spec_env.trial_steps * self.env.trials_per_reset)
        spec_env.close()  # only its specs were needed (for mazes it holds a running engine)
        self.actor, self.critic = self.agent.actor, self.agent.critic
        self.algo = instantiate(algo)(actor=self.actor, critic=self.critic)
        # Environment frames seen by all ranks together: the x-axis of every curve. A buffer, so it
        # is saved in checkpoints and restored on resume.
        self.register_buffer("frames", torch.zeros((), dtype=torch.long))
        self._last_time = time.perf_counter()

    # ------------------------------------------------------------------ optimisation set-up
    def configure_optimizers(self):  # noqa: D102
        optimizer = instantiate(self.hparams.optimizer)(self.algo.param_groups())
        if self.algo.lr_schedule is LRSchedule.linear:
            total = max(1, self.hparams.max_epochs)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: max(0.0, 1 - epoch / total))
            return [optimizer], [scheduler]
        return optimizer

    # ------------------------------------------------------------------ one iteration
    def training_step(self, dataloader_iter):
        """Collect (done by the datamodule) -> advantages -> the algorithm's update -> log.

        The batch is pulled here from the data iterator rather than handed in: Lightning then does not
        prefetch the next batch, so each batch is collected after the previous update, and a checkpoint
        between two iterations holds every random stream exactly where that boundary left it (a run
        stopped mid-epoch resumes bit-identically).
        """
        batch, _, _ = next(dataloader_iter)
        data = _trim_padding(batch.to(self.device))
        self.algo.compute_advantages(data)
        stats = self.algo.update(data, self.optimizers(), _LightningUpdate(self))
        self._log_iteration(data, stats)

    # ------------------------------------------------------------------ logging
    def _log_iteration(self, data: TensorDictBase, update_stats: dict[str, torch.Tensor]) -> None:
        n = self.env.episodes_per_trial
        trial_return, per_episode = returns_per_episode(
            data["next", "reward"], data["episode_index"], data["next", "trial_done"], n
        )
        valid = data["valid"]
        ev = explained_variance(data["state_value"][valid], data["value_target"][valid])
        ev_returns = explained_variance(data["state_value"][valid], self.algo.monte_carlo_targets(data)[valid])
        local = {
            "train/trial_return": trial_return,
            **{f"train/return_ep{k}": v for k, v in enumerate(per_episode)},
            "train/explained_variance": ev.nan_to_num(0.0),  # of the λ-return targets (lean on the critic)
            "train/explained_variance_returns": ev_returns.nan_to_num(0.0),  # of the returns that followed
            **update_stats,
            "frames": valid.sum().to(per_episode.dtype),
        }
        # one collective for all statistics, named by key rather than by position
        values = torch.stack([v.to(per_episode.device, per_episode.dtype).reshape(()) for v in local.values()])
        if self.trainer.world_size > 1:
            values = self.trainer.strategy.reduce(values, reduce_op="mean")
        metrics = dict(zip(local, values.tolist()))  # one device-to-host copy
        new_frames = int(round(metrics.pop("frames") * self.trainer.world_size))  # real (unpadded) steps, all ranks
        self.frames += new_frames

        now = time.perf_counter()
        fps = new_frames / (now - self._last_time)  # collection + update of this iteration
        self._last_time = now
        metrics["time/fps"] = fps
        metrics["time/frames"] = float(self.frames)
        for i, group in enumerate(self.optimizers().param_groups):
            metrics[f"train/lr_group{i}"] = group["lr"]
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=int(self.frames))
        self.log_dict(
            {"fps": fps, "trial_return": metrics["train/trial_return"], "frames": float(self.frames)},
            prog_bar=True,
            logger=False,
            batch_size=1,
        )

    def on_train_epoch_start(self) -> None:
        """Start the fps clock here, so that an epoch's first iteration does not count the meta-test;
        set this epoch's schedules (entropy coefficient)."""
        self._last_time = time.perf_counter()
        self.algo.on_epoch_start(self.current_epoch, self.hparams.max_epochs)

    def on_train_epoch_end(self) -> None:  # noqa: D102
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save torch's random states (action sampling, minibatches) so a resumed run continues them.

        The env streams (tasks, rewards) are saved by the datamodule; NumPy and ``random`` are unused.
        """
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the random states; rename a pre-0.2 checkpoint's algorithm keys (``loss_module.*``);
        give a checkpoint from before value normalisation its neutral moments (no data seen)."""
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith(("loss_module.", "gae."))]:
            state[f"algo.{key}"] = state.pop(key)
        if state and "algo.value_moments" not in state:
            state["algo.value_moments"] = self.algo.value_moments.detach().clone()
        states = checkpoint.get("rng_states")
        if states is None:
            return
        torch.set_rng_state(states["torch"])
        # a checkpoint written on N GPUs restores the first min(N, this machine's) device streams
        for device, cuda_state in enumerate(states["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


class _LightningUpdate(UpdateContext):
    """An update's backward passes and rank collectives, through the module's Lightning strategy."""

    def __init__(self, module: RL2Module):
        self.module = module
        self.distributed = module.trainer.world_size > 1

    def backward(self, loss: torch.Tensor) -> None:
        """``manual_backward`` outside DDP's own gradient sync: :meth:`average_gradients` averages
        explicitly, and DDP's reducer, armed by every backward, would otherwise wait for gradients of
        parameters a loss does not touch (TRPO's critic loss leaves the actor alone)."""
        model = self.module.trainer.strategy.model
        if self.module.trainer.world_size > 1 and hasattr(model, "no_sync"):
            with model.no_sync():
                self.module.manual_backward(loss)
        else:
            self.module.manual_backward(loss)

    def mean_over_ranks(self, x: torch.Tensor) -> torch.Tensor:
        """Lightning's DDP wrapper only synchronises the first backward after each forward through it,
        but these updates run many backward passes per step: each is averaged here, in one collective."""
        trainer = self.module.trainer
        return trainer.strategy.reduce(x, reduce_op="mean") if trainer.world_size > 1 else x

    def where(self) -> str:  # noqa: D102
        m = self.module
        return (f"epoch {m.current_epoch}, iteration {m.trainer.fit_loop.epoch_loop.batch_idx + 1} "
                f"(update {m.global_step + 1})")


def _trim_padding(data: TensorDictBase) -> TensorDictBase:
    """Drop the trailing columns where every trial of the batch is only padding."""
    last = int(data["valid"].squeeze(-1).any(0).nonzero().max()) + 1
    return data if last == data.shape[1] else data[:, :last]


# ---------------------------------------------------------------------- checkpoints written before 0.2
_OLD_SIMULATORS = {
    "bandit": "rl2_lightning.envs.BernoulliBandit",
    "tabular": "rl2_lightning.envs.TabularMDP",
    "riverswim": "rl2_lightning.envs.RiverSwim",
    "maze": "rl2_lightning.envs.maze.doom.MazeSimulator",
}
_OLD_SIZES = ("num_arms", "num_states", "num_actions", "episode_steps", "size", "horizon")
_OLD_MEMORIES = {"gru": "rl2_lightning.models.GRUMemory", "mlp": "rl2_lightning.models.MLPMemory"}


def upgrade_hparams(env: dict, model: dict, algo: dict) -> tuple[dict, dict, dict]:
    """The config nodes of a checkpoint written before the components redesign (flat ``env.family``,
    ``model.architecture``, PPO's keys in ``algo``), as ``_target_`` nodes; current ones unchanged."""
    env, model, algo = dict(env), dict(model), dict(algo)
    if "_target_" not in env:
        family = env.pop("family")
        sizes = {k: env.pop(k) for k in _OLD_SIZES if k in env}
        env = {
            "_target_": "rl2_lightning.envs.TrialEnvFactory",
            "simulator": {"_target_": _OLD_SIMULATORS[family], "_partial_": True,
                          **{k: v for k, v in sizes.items() if v is not None}},
            **env,
        }
    if "_target_" not in model:
        memory = {"_target_": _OLD_MEMORIES[model.pop("architecture", "gru")], "_partial_": True}
        model = {"_target_": "rl2_lightning.models.make_agent", "_partial_": True, "memory": memory, **model}
    if "_target_" not in algo:
        algo = {"_target_": "rl2_lightning.algos.PPO", "_partial_": True, **algo}
    return env, model, algo


def explained_variance(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - Var[target - prediction] / Var[target]`` (nan when the target is constant)."""
    var = target.var()
    return 1 - (target - prediction).var() / var if var > 0 else torch.full_like(var, float("nan"))


def returns_per_episode(
    reward: torch.Tensor, episode_index: torch.Tensor, trial_done: torch.Tensor, episodes_per_trial: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean total reward per trial and mean reward of each episode index, over the trials of a batch.

    Inputs are ``[B, T, 1]``: the step rewards, the episode index of each step's observation and the
    trial-end flags. Works for rows holding several trials (no-reset ablation) as well.
    """
    num_trials = trial_done.sum().clamp(min=1)
    idx = episode_index.reshape(-1).clamp(max=episodes_per_trial - 1)
    per_episode = torch.zeros(episodes_per_trial, dtype=reward.dtype, device=reward.device)
    per_episode.scatter_add_(0, idx, reward.reshape(-1))
    return reward.sum() / num_trials, per_episode / num_trials
