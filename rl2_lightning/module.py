"""The RL² LightningModule: GRU actor-critic trained by PPO over batches of whole trials.

One iteration (= one ``training_step``) reads top to bottom: the batch of whole trials collected by the
datamodule -> value of every step (critic over each whole trial) -> GAE -> epochs x minibatches of
trials -> log. Gradients are averaged across ranks after every backward, so that every rank applies
the same update.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from lightning import LightningModule
from tensordict import TensorDictBase
from torchrl.modules import set_recurrent_mode
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

from rl2_lightning.config import env_kwargs
from rl2_lightning.envs import make_simulator
from rl2_lightning.models import make_agent
from rl2_lightning.ppo import explained_variance, minibatch_indices, next_trial_values, returns_per_episode


class RL2Module(LightningModule):
    """RL² agent + PPO.

    Args:
        env: the env config (family, sizes, ``episodes_per_trial``, ``num_envs``, ...).
        model: arguments of :func:`rl2_lightning.models.make_agent`.
        algo: PPO settings (see :class:`rl2_lightning.config.AlgoConfig`).
        max_epochs: length of the run, for the linear LR schedule.
    """

    def __init__(self, env: dict, model: dict, algo: dict, max_epochs: int = 1):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.env_cfg, self.algo = dict(env), dict(algo)
        spec_env = _spec_env(self.env_cfg["family"], env_kwargs(self.env_cfg))
        self.agent = make_agent(spec_env, **model)
        spec_env.close()  # only its specs were needed (for mazes it holds a running engine)
        self.actor, self.critic = self.agent.actor, self.agent.critic
        self.gae = GAE(
            gamma=algo["gamma"], lmbda=algo["lmbda"], value_network=None, deactivate_vmap=True, average_gae=False
        )
        # Stop bootstrapping at trial ends only (inner episode ends are not boundaries).
        self.gae.set_keys(done="trial_done", terminated="trial_done")
        self.loss_module = ClipPPOLoss(
            self.actor,
            self.critic,
            clip_epsilon=algo["clip_epsilon"],
            entropy_bonus=algo["entropy_coeff"] > 0 or bool(algo.get("entropy_coeff_final")),
            entropy_coeff=algo["entropy_coeff"],
            critic_coeff=algo["critic_coeff"],
            loss_critic_type="l2",
            # per-step losses: padded steps of variable-length trials are masked out in _update
            reduction="none",
        )
        self.loss_module.set_keys(sample_log_prob="action_log_prob", value="state_value")
        # Environment frames seen by all ranks together: the x-axis of every curve. A buffer, so it
        # is saved in checkpoints and restored on resume.
        self.register_buffer("frames", torch.zeros((), dtype=torch.long))
        self._last_time = time.perf_counter()

    # ------------------------------------------------------------------ optimisation set-up
    def configure_optimizers(self):  # noqa: D102
        actor_params = list(self.actor.parameters())
        seen = {id(p) for p in actor_params}
        critic_params = [p for p in self.critic.parameters() if id(p) not in seen]
        # With a shared trunk the encoder and GRU learn at the actor's rate; the value head (and
        # otherwise the critic's own encoder and GRU) at the critic's.
        groups = [
            {"params": actor_params, "lr": self.algo["actor_lr"]},
            {"params": critic_params, "lr": self.algo["critic_lr"]},
        ]
        optimizer = torch.optim.Adam(groups, eps=1e-5)
        if self.algo["lr_schedule"] == "linear":
            total = max(1, self.hparams.max_epochs)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: max(0.0, 1 - epoch / total))
            return [optimizer], [scheduler]
        return optimizer

    # ------------------------------------------------------------------ one iteration
    def training_step(self, dataloader_iter):
        """Collect (done by the datamodule) -> advantages -> epochs x minibatches -> log.

        The batch is pulled here from the data iterator rather than handed in: Lightning then does not
        prefetch the next batch, so each batch is collected after the previous update, and a checkpoint
        between two iterations holds every random stream exactly where that boundary left it (a run
        stopped mid-epoch resumes bit-identically).
        """
        batch, _, _ = next(dataloader_iter)
        data = _trim_padding(batch.to(self.device))
        self._compute_advantages(data)

        optimizer = self.optimizers()
        stats = []
        for _ in range(self.algo["epochs"]):
            for idx in minibatch_indices(data.shape[0], self.algo["minibatches"]):
                stats.append(self._update(optimizer, data[idx.to(self.device)]))
        self._log_iteration(data, {k: torch.stack([s[k] for s in stats]).mean() for k in stats[0]})

    def _compute_advantages(self, data: TensorDictBase) -> None:
        """Critic over each whole trial from a zero state, next-state values by shifting, then GAE."""
        with torch.no_grad(), set_recurrent_mode(True):
            values = self.critic(data.select(*self.critic.in_keys, "is_init", strict=False))["state_value"]
        values = values * data["valid"]  # padding after a trial's end is worth nothing
        data.set("state_value", values)
        data.set(("next", "state_value"), next_trial_values(values, data["next", "trial_done"]))
        self.gae(data)

    def _update(self, optimizer, minibatch: TensorDictBase) -> dict[str, torch.Tensor]:
        """One optimizer step on a minibatch of whole trials; returns its statistics by name."""
        valid = minibatch["valid"].squeeze(-1)
        if self.algo["normalize_advantage"]:
            adv = minibatch["advantage"]
            real = adv[valid]
            minibatch.set("advantage", (adv - real.mean()) / (real.std() + 1e-8) * valid.unsqueeze(-1))
        with set_recurrent_mode(True):
            losses = self.loss_module(minibatch)
        count = valid.sum().clamp(min=1)

        def masked_mean(x: torch.Tensor) -> torch.Tensor:
            return (x.reshape(valid.shape) * valid).sum() / count

        for key in ("loss_objective", "loss_critic", "loss_entropy"):
            if key in losses.keys():
                losses.set(key, masked_mean(losses[key]))
        loss = losses["loss_objective"] + losses["loss_critic"] + losses.get("loss_entropy", 0.0)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        self._average_gradients()
        grad_norms = self._clip_gradients(optimizer)
        self._check_finite(loss, grad_norms)
        optimizer.step()
        zero = torch.zeros((), device=self.device)
        stats = {
            "loss/objective": losses["loss_objective"],
            "loss/critic": losses["loss_critic"],
            "loss/entropy": losses.get("loss_entropy", zero),
            "train/entropy": losses.get("entropy", zero),
            "train/approx_kl": losses.get("kl_approx", zero),
            "train/clip_fraction": losses.get("clip_fraction", zero),
            **grad_norms,
        }
        return {k: v.detach() for k, v in stats.items()}

    def _check_finite(self, loss: torch.Tensor, grad_norms: dict[str, torch.Tensor]) -> None:
        """Stop before a non-finite loss or gradient reaches the parameters (and so any checkpoint).

        Gradients are averaged over ranks before this, so every rank stops at the same update.
        """
        norms = torch.stack([loss.detach(), *grad_norms.values()])
        if not bool(torch.isfinite(norms).all()):
            loop = self.trainer.fit_loop.epoch_loop
            raise FloatingPointError(
                f"non-finite loss or gradient in epoch {self.current_epoch}, iteration {loop.batch_idx + 1} "
                f"(update {self.global_step + 1}); the run stops with its parameters unchanged, and its "
                "newest checkpoint is the last good one"
            )

    def _clip_gradients(self, optimizer) -> dict[str, torch.Tensor]:
        """Clip the gradient norm to ``max_grad_norm``: of all parameters together (``grad_clip=joint``),
        or of the actor's and the critic's parameter groups each on its own (``separate``).

        At initialisation the critic's gradient is 80-200x the actor's (DESIGN.md §10), so a joint clip
        lets the critic set the actor's step size. Returns the norms before clipping.
        """
        max_norm = self.algo["max_grad_norm"]
        if self.algo.get("grad_clip", "joint") == "joint":
            params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
            self.clip_gradients(optimizer, gradient_clip_val=max_norm, gradient_clip_algorithm="norm")
            return {"train/grad_norm": norm}
        norms = {}
        for name, group in zip(("actor", "critic"), optimizer.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            norms[f"train/grad_norm_{name}"] = (
                torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.zeros((), device=self.device)
            )
        return norms

    def _average_gradients(self) -> None:
        """Mean of the gradients over ranks, in one collective.

        Lightning's DDP wrapper only synchronises the first backward after each ``training_step``
        forward, but PPO does ``epochs x minibatches`` backward passes per step; so each one is
        averaged here through the strategy's own ``reduce``. A no-op on one device.
        """
        if self.trainer.world_size <= 1:
            return
        params = [p for p in self.parameters() if p.grad is not None]
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        flat = self.trainer.strategy.reduce(flat, reduce_op="mean")
        for p, g in zip(params, torch.split(flat, [p.numel() for p in params])):
            p.grad.copy_(g.view_as(p.grad))

    # ------------------------------------------------------------------ logging
    def _log_iteration(self, data: TensorDictBase, update_stats: dict[str, torch.Tensor]) -> None:
        n = self.env_cfg["episodes_per_trial"]
        trial_return, per_episode = returns_per_episode(
            data["next", "reward"], data["episode_index"], data["next", "trial_done"], n
        )
        valid = data["valid"]
        ev = explained_variance(data["state_value"][valid], data["value_target"][valid])
        local = {
            "train/trial_return": trial_return,
            **{f"train/return_ep{k}": v for k, v in enumerate(per_episode)},
            "train/explained_variance": ev.nan_to_num(0.0),
            **update_stats,
            "frames": valid.sum().to(per_episode.dtype),
        }
        # one collective for all statistics, named by key rather than by position
        values = torch.stack([v.to(per_episode.dtype).reshape(()) for v in local.values()])
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
        metrics["train/entropy_coeff"] = float(self.loss_module.entropy_coeff)
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
        set this epoch's entropy coefficient."""
        self._last_time = time.perf_counter()
        self.loss_module.entropy_coeff.fill_(self.entropy_coeff_at(self.current_epoch))

    def entropy_coeff_at(self, epoch: int) -> float:
        """``entropy_coeff`` decayed linearly to ``entropy_coeff_final`` over ``max_epochs`` (constant
        when ``entropy_coeff_final`` is unset)."""
        start, final = self.algo["entropy_coeff"], self.algo.get("entropy_coeff_final")
        if final is None:
            return start
        progress = min(1.0, epoch / max(1, self.hparams.max_epochs - 1))
        return start + (final - start) * progress

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

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:  # noqa: D102
        states = checkpoint.get("rng_states")
        if states is None:
            return
        torch.set_rng_state(states["torch"])
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])


def _trim_padding(data: TensorDictBase) -> TensorDictBase:
    """Drop the trailing columns where every trial of the batch is only padding."""
    last = int(data["valid"].squeeze(-1).any(0).nonzero().max()) + 1
    return data if last == data.shape[1] else data[:, :last]


def _spec_env(family: str, kwargs: dict):
    """A one-env trial env, only to read observation and action specs for sizing the networks."""
    from rl2_lightning.envs import SampledTasks, TrialEnv

    sim = make_simulator(family, 1, **kwargs)
    return TrialEnv(sim, SampledTasks(sim.sample_tasks), 1)
