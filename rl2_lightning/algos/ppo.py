"""PPO over batches of whole trials (TorchRL's ``ClipPPOLoss``): epochs x minibatches along the trial axis."""

from __future__ import annotations

from enum import Enum
from typing import Optional

import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.modules import set_recurrent_mode
from torchrl.objectives import ClipPPOLoss

from rl2_lightning.algos.base import (
    NonNegative,
    Positive,
    PositiveInt,
    TrialAlgorithm,
    UpdateContext,
    critic_after_actor,
    masked_mean,
    minibatch_indices,
    normalized_advantage,
)


class GradClip(Enum):
    """``joint``: one norm over all parameters; ``separate``: the actor's and the critic's groups each clipped."""

    joint = "joint"
    separate = "separate"


class CriticLoss(Enum):
    """``l2``: squared error; ``huber``: Huber with δ = 1 (TorchRL's ``smooth_l1``), as lucaslingle/pytorch_rl2."""

    l2 = "l2"
    huber = "huber"


class AdvantageScope(Enum):
    """Over which steps advantages are standardised: each ``minibatch`` or the whole ``batch`` (the authors')."""

    minibatch = "minibatch"
    batch = "batch"


class PPO(TrialAlgorithm):
    """Clipped-surrogate PPO; each minibatch is a set of whole trials, replayed by the recurrent actor.

    Args (beside :class:`~rl2_lightning.algos.base.TrialAlgorithm`'s, passed on as ``common``):
        clip_epsilon: the surrogate's clipping range.
        epochs: passes over each batch of trials.
        minibatches: minibatches per epoch, taken along the trial axis.
        entropy_coeff: entropy bonus; with ``entropy_coeff_final`` it decays linearly to that over the run.
        critic_coeff: weight of the value loss.
        max_grad_norm: gradient-norm clip, joint or per group (``grad_clip``).
        normalize_advantage: standardise advantages (over ``advantage_scope``).
        advantage_scope: standardise over each minibatch or once over the whole batch.
        critic_loss: the value loss, ``l2`` or ``huber``.
        target_kl: the KL guard: stop the iteration's epochs after the first whose mean approximate KL
            to the collecting policy exceeds this (``None``: always run every epoch).
    """

    def __init__(
        self, actor: nn.Module, critic: nn.Module, clip_epsilon: Positive = 0.1, epochs: PositiveInt = 4,
        minibatches: PositiveInt = 4, entropy_coeff: NonNegative = 0.01,
        entropy_coeff_final: Optional[NonNegative] = None, critic_coeff: NonNegative = 1.0,
        max_grad_norm: Positive = 0.5, grad_clip: GradClip = GradClip.joint, normalize_advantage: bool = True,
        advantage_scope: AdvantageScope = AdvantageScope.minibatch, critic_loss: CriticLoss = CriticLoss.l2,
        target_kl: Optional[Positive] = None, **common,
    ):
        super().__init__(actor, critic, **common)
        self.advantage_scope, self.target_kl = AdvantageScope(advantage_scope), target_kl
        self.epochs, self.minibatches = epochs, minibatches
        self.entropy_coeff, self.entropy_coeff_final = entropy_coeff, entropy_coeff_final
        self.max_grad_norm, self.grad_clip = max_grad_norm, GradClip(grad_clip)
        self.normalize_advantage = normalize_advantage
        # With a shared trunk the loss runs it once: the value head reads the actor pass's features.
        self.loss_module = ClipPPOLoss(
            actor,
            critic_after_actor(actor, critic),
            clip_epsilon=clip_epsilon,
            entropy_bonus=entropy_coeff > 0 or bool(entropy_coeff_final),
            entropy_coeff=entropy_coeff,
            critic_coeff=critic_coeff,
            loss_critic_type={"l2": "l2", "huber": "smooth_l1"}[CriticLoss(critic_loss).value],
            reduction="none",  # per-step losses: padded steps of variable-length trials are masked out
        )
        self.loss_module.set_keys(sample_log_prob="action_log_prob", value="state_value")

    def entropy_coeff_at(self, epoch: int, max_epochs: int) -> float:
        """``entropy_coeff`` decayed linearly to ``entropy_coeff_final`` over ``max_epochs`` (constant when unset)."""
        if self.entropy_coeff_final is None:
            return self.entropy_coeff
        progress = min(1.0, epoch / max(1, max_epochs - 1))
        return self.entropy_coeff + (self.entropy_coeff_final - self.entropy_coeff) * progress

    def on_epoch_start(self, epoch: int, max_epochs: int) -> None:  # noqa: D102
        self.loss_module.entropy_coeff.fill_(self.entropy_coeff_at(epoch, max_epochs))

    def update(self, data: TensorDictBase, optimizer: torch.optim.Optimizer, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        """``epochs`` x ``minibatches`` optimizer steps; the statistics averaged over them."""
        if self.normalize_advantage and self.advantage_scope is AdvantageScope.batch:
            data.set("advantage", normalized_advantage(data))
        stats, epochs = [], 0
        for _ in range(self.epochs):
            epoch = [self._step(optimizer, data[idx.to(data.device)], ctx)
                     for idx in minibatch_indices(data.shape[0], self.minibatches)]
            stats += epoch
            epochs += 1
            if self.target_kl is not None and kl_guard_stops(epoch, self.target_kl, ctx):
                break
        out = {k: torch.stack([s[k] for s in stats]).mean() for k in stats[0]}
        out["train/epochs"] = torch.tensor(float(epochs))
        return out

    def _step(self, optimizer, minibatch: TensorDictBase, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        valid = minibatch["valid"].squeeze(-1)
        if self.normalize_advantage and self.advantage_scope is AdvantageScope.minibatch:
            minibatch.set("advantage", normalized_advantage(minibatch))
        with set_recurrent_mode(True):
            losses = self.loss_module(minibatch)
        for key in ("loss_objective", "loss_critic", "loss_entropy"):
            if key in losses.keys():
                losses.set(key, masked_mean(losses[key], valid))
        loss = losses["loss_objective"] + losses["loss_critic"] + losses.get("loss_entropy", 0.0)
        optimizer.zero_grad(set_to_none=True)
        ctx.backward(loss)
        ctx.average_gradients([p for g in optimizer.param_groups for p in g["params"]])
        grad_norms = self.clip_gradients(optimizer)
        ctx.check_finite(loss, *grad_norms.values())
        optimizer.step()
        zero = torch.zeros((), device=loss.device)
        stats = {
            "loss/objective": losses["loss_objective"],
            "loss/critic": losses["loss_critic"],
            "loss/entropy": losses.get("loss_entropy", zero),
            "train/approx_kl": losses.get("kl_approx", zero),
            "train/clip_fraction": losses.get("clip_fraction", zero),
            # a float whatever TorchRL stored (entropy_coeff=0 without a bonus is kept as an integer tensor)
            "train/entropy_coeff": self.loss_module.entropy_coeff.detach().to(loss.dtype),
            **grad_norms,
        }
        if "entropy" in losses.keys():  # TorchRL computes it only with an entropy bonus: no false zero without
            stats["train/entropy"] = losses["entropy"]
        return {k: v.detach().reshape(()) for k, v in stats.items()}

    def clip_gradients(self, optimizer) -> dict[str, torch.Tensor]:
        """Clip the gradient norm to ``max_grad_norm``, of all parameters together (``joint``) or of the
        actor's and the critic's groups each (``separate``: at initialisation the critic's gradient is
        80-200x the actor's, docs/recipes.md, so a joint clip lets the critic set the actor's step).
        Returns the norms before clipping."""
        named = {"actor": [], "critic": []}
        for i, g in enumerate(optimizer.param_groups):  # by name (a network may have two groups: decayed or not)
            named[g.get("name", ("actor", "critic")[min(i, 1)])] += [p for p in g["params"] if p.grad is not None]
        if self.grad_clip is GradClip.joint:
            params = [p for g in named.values() for p in g]
            return {"train/grad_norm": torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)}
        return {
            f"train/grad_norm_{name}": torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
            if params
            else torch.zeros(())
            for name, params in named.items()
        }


def kl_guard_stops(epoch_stats: list[dict[str, torch.Tensor]], target_kl: float, ctx: UpdateContext) -> bool:
    """Whether an epoch's mean approximate KL to the collecting policy (over its minibatches and all
    ranks, so that every rank stops together) exceeds ``target_kl``."""
    kl = torch.stack([s["train/approx_kl"] for s in epoch_stats]).mean()
    return bool(ctx.mean_over_ranks(kl) > target_kl)
