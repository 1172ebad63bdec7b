"""What every algorithm shares: GAE over whole trials, and the services a Lightning module lends an update.

An algorithm is a ``torch.nn.Module`` built from config (``conf/algo/<name>.yaml``, a ``_partial_``
node completed with the agent's actor and critic). Per iteration the module calls
:meth:`TrialAlgorithm.compute_advantages` and then :meth:`TrialAlgorithm.update` with an
:class:`UpdateContext`, which is all an update may know of ranks and backward passes.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictSequential
from torch import nn
from torchrl.modules import set_recurrent_mode
from torchrl.objectives.value import GAE

from rl2_lightning.components import Range

Unit = Annotated[float, Range(0.0, 1.0)]
Positive = Annotated[float, Range(0.0, None, low_open=True)]
PositiveInt = Annotated[int, Range(1, None)]
NonNegative = Annotated[float, Range(0.0, None)]


class LRSchedule(Enum):
    """Learning-rate schedule over ``trainer.max_epochs``."""

    constant = "constant"
    linear = "linear"


class UpdateContext:
    """Backward passes and rank collectives for an update, outside Lightning (one process).

    :class:`~rl2_lightning.module.RL2Module` hands its updates a subclass that runs
    ``manual_backward`` and reduces over ranks through the Lightning strategy.
    """

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss``."""
        loss.backward()

    #: whether there are several ranks (then every gradient and statistic is averaged over them)
    distributed = False

    def mean_over_ranks(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of ``x`` over ranks (identity on one process; a collective may work in place)."""
        return x

    def average_gradients(self, params) -> None:
        """Replace each gradient by its mean over ranks, in one collective."""
        params = [p for p in params if p.grad is not None]
        if not params or not self.distributed:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        mean = self.mean_over_ranks(flat)
        for p, g in zip(params, torch.split(mean, [p.numel() for p in params])):
            p.grad.copy_(g.view_as(p.grad))

    def where(self) -> str:
        """Where the run stands, for error messages."""
        return "this update"

    def check_finite(self, *values: torch.Tensor) -> None:
        """Stop before a non-finite loss or gradient norm reaches the parameters (and any checkpoint)."""
        if not bool(torch.isfinite(torch.stack([v.detach().reshape(()) for v in values])).all()):
            raise FloatingPointError(
                f"non-finite loss or gradient in {self.where()}; the run stops with its parameters unchanged, "
                "and its newest checkpoint is the last good one"
            )


class TrialAlgorithm(nn.Module):
    """GAE over whole trials (bootstrapping stops at trial ends only), then an algorithm's update.

    A subclass takes its own arguments and passes these on as ``**common`` (the config checker follows
    them there: :func:`rl2_lightning.components.signature_of`).

    Args:
        actor: the agent's ``ProbabilisticActor`` (writes ``action_log_prob``).
        critic: the agent's value module (writes ``state_value``).
        gamma, lmbda: discount and GAE λ.
        actor_lr, critic_lr: learning rates of the actor's and the critic's parameter groups (with a
            shared trunk the trunk learns at the actor's rate).
        lr_schedule: ``constant`` or ``linear`` (to 0 over the run).
        reward_scale: rewards are multiplied by this for GAE and the critic only (the critic then
            learns values of order one: a trial's return is 50-2000 in the MDP and long-bandit
            settings, and Adam moves a value head by about its learning rate per update). The policy's
            input, the logged returns and the meta-test keep the true rewards.
        weight_decay: decay of the networks' matrices (never of biases and norm gains); decoupled
            with ``optimizer=adamw``, an L2 term with ``adam``.
        value_norm: the critic predicts returns normalised by a running mean and standard deviation of
            the value targets (the authors' critic), kept as buffers and so in checkpoints.
    """

    def __init__(
        self, actor: nn.Module, critic: nn.Module, gamma: Unit = 0.99, lmbda: Unit = 0.3,
        actor_lr: Positive = 3e-4, critic_lr: Positive = 1e-4, lr_schedule: LRSchedule = LRSchedule.constant,
        reward_scale: Positive = 1.0, weight_decay: NonNegative = 0.0, value_norm: bool = False,
    ):
        super().__init__()
        # Not submodules: the agent's networks belong to the Lightning module (their state_dict keys
        # stay actor.* / critic.*); the algorithm only holds what it owns (losses, GAE).
        self._networks = (actor, critic)
        self.actor_lr, self.critic_lr = actor_lr, critic_lr
        self.weight_decay = float(weight_decay)
        self.value_norm = bool(value_norm)
        # running moments of the value targets (what value_norm normalises by); a count of 0: no data yet
        self.register_buffer("value_moments", torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
        self.lr_schedule = LRSchedule(lr_schedule)
        self.gae = GAE(gamma=gamma, lmbda=lmbda, value_network=None, deactivate_vmap=True, average_gae=False)
        # Inner episode ends are not boundaries: the trial's return flows across them.
        self.gae.set_keys(done="trial_done", terminated="trial_done")
        self.reward_scale = float(reward_scale)
        if self.reward_scale != 1.0:  # GAE reads ("next", "scaled_reward"), written by compute_advantages
            self.gae.set_keys(reward="scaled_reward")

    @property
    def actor(self) -> nn.Module:
        """The policy being optimised."""
        return self._networks[0]

    @property
    def critic(self) -> nn.Module:
        """The value function."""
        return self._networks[1]

    def param_groups(self) -> list[dict]:
        """The optimizer's groups: the actor's parameters, then the critic's own, each named. Every group
        sets its own ``weight_decay``, so decay applies only where configured: with ``weight_decay > 0``
        each network's matrices get it and its biases and norm gains (vectors) do not, whatever the
        optimizer's default (AdamW's is 0.01)."""
        actor = list(self.actor.parameters())
        seen = {id(p) for p in actor}
        critic = [p for p in self.critic.parameters() if id(p) not in seen]
        return self.decay_groups("actor", actor, self.actor_lr) + self.decay_groups("critic", critic, self.critic_lr)

    def decay_groups(self, name: str, params: list, lr: float) -> list[dict]:
        """``params`` as one group without decay, or (``weight_decay > 0``) its matrices with the decay and
        its vectors without."""
        if self.weight_decay <= 0:
            return [{"name": name, "params": params, "lr": lr, "weight_decay": 0.0}]
        return [{"name": name, "params": [p for p in params if p.ndim >= 2], "lr": lr, "weight_decay": self.weight_decay},
                {"name": name, "params": [p for p in params if p.ndim < 2], "lr": lr, "weight_decay": 0.0}]

    @torch.no_grad()
    def compute_advantages(self, data: TensorDictBase) -> None:
        """Critic over each whole trial from a zero state, next-state values by shifting, then GAE.

        Writes ``state_value``, ``("next", "state_value")``, ``advantage`` and ``value_target``.
        """
        with set_recurrent_mode(True):
            values = self.critic(data.select(*self.critic.in_keys, "is_init", strict=False))["state_value"]
        if self.value_norm:  # the critic's output is a normalised return: GAE needs returns
            values = denormalize(values, self.value_moments)
        values = values * data["valid"]  # padding after a trial's end is worth nothing
        data.set("state_value", values)
        data.set(("next", "state_value"), next_trial_values(values, data["next", "trial_done"]))
        if self.reward_scale != 1.0:
            data.set(("next", "scaled_reward"), data["next", "reward"] * self.reward_scale)
        self.gae(data)
        if self.value_norm:  # the critic learns the targets in the updated normalised scale
            valid = data["valid"]
            self.value_moments.copy_(update_moments(self.value_moments, data["value_target"][valid]))
            for key in ("value_target", "state_value"):
                data.set(key, normalize(data[key], self.value_moments) * valid)

    @torch.no_grad()
    def monte_carlo_targets(self, data: TensorDictBase) -> torch.Tensor:
        """The discounted returns that followed each step, in the critic's units (after
        :meth:`compute_advantages`: rewards times ``reward_scale``, normalised when ``value_norm``).
        Unlike ``value_target``, they do not lean on the critic's own values, so how well
        ``state_value`` explains them shows a critic that is consistent with itself but far from the returns."""
        valid = data["valid"]
        reward = data["next", "reward"].to(data["state_value"].dtype) * self.reward_scale * valid
        returns = discounted_returns(reward, data["next", "trial_done"], float(self.gae.gamma))
        if self.value_norm:
            returns = normalize(returns, self.value_moments) * valid
        return returns

    def on_epoch_start(self, epoch: int, max_epochs: int) -> None:
        """Per-epoch schedules (entropy, ...); nothing by default."""

    def update(self, data: TensorDictBase, optimizer: torch.optim.Optimizer, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        """One iteration's update on a batch of whole trials with advantages; returns statistics by name."""
        raise NotImplementedError


def update_moments(moments: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[mean, variance, count]`` updated with the sample ``x`` (Chan et al.'s parallel update: the
    moments of all the data seen so far, exactly)."""
    x = x.detach().double().flatten()
    mean, var, count = moments.unbind()
    n = x.numel()
    if n == 0:
        return moments.clone()
    batch_mean, batch_var = x.mean(), x.var(unbiased=False)
    total = count + n
    delta = batch_mean - mean
    new_mean = mean + delta * n / total
    new_var = (var * count + batch_var * n + delta**2 * count * n / total) / total
    return torch.stack([new_mean, new_var, total])


def normalize(x: torch.Tensor, moments: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / std`` by ``[mean, variance, count]`` moments, in ``x``'s dtype."""
    mean, var = moments[0].to(x.dtype), moments[1].to(x.dtype)
    return (x - mean) / torch.sqrt(var + eps)


def denormalize(y: torch.Tensor, moments: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The inverse of :func:`normalize`."""
    mean, var = moments[0].to(y.dtype), moments[1].to(y.dtype)
    return y * torch.sqrt(var + eps) + mean


def critic_after_actor(actor: nn.Module, critic: nn.Module) -> nn.Module:
    """What of ``critic`` a loss must run once ``actor`` has run on the same tensordict.

    With a trunk shared between the two (``model.shared_trunk``: the critic's leading modules are
    the actor's own), the actor's pass has already written the trunk's features, with their graph,
    into the tensordict; the critic's remaining modules (the value head) read them from there, so
    the trunk runs once per minibatch instead of twice, and the value loss's gradient still reaches
    the trunk through the same features. Without a shared module the critic comes back whole.
    """
    if not isinstance(critic, TensorDictSequential):
        return critic
    shared = {id(m) for m in actor.modules()}
    modules = list(critic.module)
    own = [m for m in modules if id(m) not in shared]
    if len(own) == len(modules):
        return critic
    if not own or any(id(m) in shared for m in modules[len(modules) - len(own):]):
        raise ValueError("a critic sharing modules with the actor must share a leading trunk and end in its own head")
    return TensorDictSequential(*own)


def normalized_advantage(minibatch: TensorDictBase) -> torch.Tensor:
    """Advantages standardised over the valid steps of a (mini)batch, 0 on padding."""
    valid = minibatch["valid"].squeeze(-1)
    adv = minibatch["advantage"]
    real = adv[valid]
    return (adv - real.mean()) / (real.std() + 1e-8) * valid.unsqueeze(-1)


def masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of per-step values ``x`` over the valid steps (``valid`` is ``[B, T]``)."""
    return (x.reshape(valid.shape) * valid).sum() / valid.sum().clamp(min=1)


def next_trial_values(values: torch.Tensor, trial_done: torch.Tensor) -> torch.Tensor:
    """Value of the next state within the same trial: ``V(s_{t+1})``, and 0 where the trial ends.

    ``values`` and ``trial_done`` are ``[B, T, 1]``; each row is one whole trial (or, for the no-reset
    ablation, consecutive whole trials), so the row's last step always ends a trial. Inner episode ends
    are *not* boundaries: the trial's return flows across them.
    """
    shifted = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    return shifted.masked_fill(trial_done, 0.0)


def discounted_returns(reward: torch.Tensor, trial_done: torch.Tensor, gamma: float) -> torch.Tensor:
    """``G_t = r_t + gamma * G_{t+1}`` along axis 1, restarting after each step that ends a trial.

    ``reward`` and ``trial_done`` are ``[B, T]`` or ``[B, T, 1]``; padding after a row's last trial must
    carry zero reward (it then returns 0).
    """
    done = trial_done.to(reward.dtype)
    out = torch.zeros_like(reward)
    acc = torch.zeros_like(reward[:, 0])
    for t in reversed(range(reward.shape[1])):
        acc = reward[:, t] + gamma * acc * (1 - done[:, t])
        out[:, t] = acc
    return out


def minibatch_indices(num_trials: int, num_minibatches: int, generator: torch.Generator | None = None):
    """A random partition of the trial axis into ``num_minibatches`` nearly equal index sets."""
    perm = torch.randperm(num_trials, generator=generator)
    return list(torch.tensor_split(perm, num_minibatches))
