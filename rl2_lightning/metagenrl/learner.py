"""The in-trial learner: a fresh softmax policy, reset at every trial start and trained by an objective.

This is MetaGenRL's meta-test learner in this project's trial layout. At a trial start every agent has
uniform logits and an empty critic. After every inner episode it

1. updates its critic, a table of Monte-Carlo returns ``Q(s, a)`` (the mean return from the pair to the
   end of its episode, over the trial so far; pairs never tried get the agent's mean value): a critic
   learned from the agent's own experience, as in the paper, in its tabular form;
2. takes ``inner_steps`` SGD steps of size ``lr`` on the objective over its last ``window`` steps.

The policy is linear in the observation (``logits = obs @ W``): a table for one-hot states, one row for
a bandit's constant observation. Families must have fixed-length episodes and a flat observation.

:class:`InTrialLearner` is a :class:`~rl2_lightning.baselines.common.Baseline`, so the evaluation code
scores it like RL² and the classical baselines. With ``meta_weight`` set it also computes MetaGenRL's
meta-gradient at every update (:func:`meta_loss`) and accumulates it into the objective's ``.grad``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tensordict import TensorDictBase
from torch import nn

from rl2_lightning.baselines.common import Baseline
from rl2_lightning.metagenrl.objective import expected_value


def log_policy(W: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    """Log-probabilities ``[B, L, A]`` of the linear softmax policies ``W [B, S, A]`` at ``obs [B, L, S]``."""
    return torch.log_softmax(torch.einsum("bls,bsa->bla", obs, W), -1)


def inner_step(W: torch.Tensor, window: dict, objective: nn.Module, lr: float, create_graph: bool = False) -> torch.Tensor:
    """One SGD step of every agent on ``objective``: ``W - lr * dL/dW``.

    Agents are independent, so the gradient of the summed loss is each agent's own gradient. With
    ``create_graph`` the step is a differentiable function of the objective's parameters
    (``torch.func.grad``), which the meta-gradient flows through.
    """
    def loss(w: torch.Tensor) -> torch.Tensor:
        return objective(window, log_policy(w, window["obs"])).sum()

    with torch.enable_grad():
        if create_graph:
            return W - lr * torch.func.grad(loss)(W)
        w = W.detach().requires_grad_(True)
        return W - lr * torch.autograd.grad(loss(w), w)[0]


def meta_loss(W: torch.Tensor, window: dict, objective: nn.Module, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MetaGenRL's meta-loss of one update: ``-Σ_a π_{W'}(a|s) Q(s, a)`` averaged over the window's states,
    with ``W' = W - lr ∇_W L_α(W)``; per agent ``[B]``, differentiable in α. Returns it and ``W'``."""
    W1 = inner_step(W.detach(), window, objective, lr, create_graph=True)
    with torch.enable_grad():
        return -expected_value(log_policy(W1, window["obs"]), window["q"]), W1


def critic_values(q_sum: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``[B, S, A]`` mean returns; pairs never tried get the agent's mean over the pairs it tried (0 if none)."""
    tried = counts > 0
    mean = q_sum / counts.clamp(min=1)
    n_tried = tried.flatten(1).sum(1).clamp(min=1)
    fill = (mean * tried).flatten(1).sum(1) / n_tried
    return torch.where(tried, mean, fill[:, None, None])


def returns_to_go(reward: torch.Tensor) -> torch.Tensor:
    """``[B, E]`` undiscounted return from each step to the end of the episode ``reward [B, E]``."""
    return reward.flip(1).cumsum(1).flip(1)


class InTrialLearner(Baseline):
    """A population of fresh learners (one per env), trained within each trial by ``objective``.

    Args:
        num_actions, obs_size: the family's sizes.
        trial_steps: steps of one trial (the time input is the share of it elapsed).
        objective: an objective of :mod:`.objective` (frozen or not; see ``meta_weight``).
        lr: inner SGD step size.
        window: the last steps each update reads (the inner batch).
        inner_steps: SGD steps per update.
        meta_weight: when set (meta-training by gradient), each update also backpropagates
            ``meta_weight * mean(meta_loss)`` into the objective's parameters.
    """

    def __init__(self, num_actions: int, obs_size: int, trial_steps: int, objective: nn.Module, lr: float = 1.0,
                 window: int = 20, inner_steps: int = 1, meta_weight: float | None = None):
        super().__init__(num_actions)
        self.obs_size, self.trial_steps = int(obs_size), int(trial_steps)
        self.objective, self.lr, self.window, self.inner_steps = objective, float(lr), int(window), int(inner_steps)
        self.meta_weight = meta_weight
        #: mean critic value of the once-updated policies, one entry per meta-gradient update
        self.meta_values: list[float] = []

    def allocate(self, batch: int, device: torch.device) -> None:  # noqa: D102
        T, S, A = self.trial_steps, self.obs_size, self.num_actions
        self.W = torch.zeros(batch, S, A, device=device)
        self.q_sum = torch.zeros(batch, S, A, device=device)
        self.counts = torch.zeros(batch, S, A, device=device)
        self.obs = torch.zeros(batch, T, S, device=device)
        self.action = torch.zeros(batch, T, dtype=torch.long, device=device)
        self.reward = torch.zeros(batch, T, device=device)
        self.done = torch.zeros(batch, T, dtype=torch.bool, device=device)
        self.ret = torch.zeros(batch, T, device=device)
        self.prev_obs = torch.zeros(batch, S, device=device)
        self.ptr = self.episode_start = 0

    def reset_stats(self, mask: torch.Tensor) -> None:  # noqa: D102
        if not mask.all():
            raise ValueError("the in-trial learner needs every env of a batch to start its trial together")
        self.allocate(mask.shape[0], mask.device)

    def observe(self, td: TensorDictBase) -> None:  # noqa: D102
        obs = td["observation"].reshape(self.batch_size, -1).float()
        if not td["is_init"].all():
            if self.ptr >= self.trial_steps:
                raise ValueError(f"a trial ran past trial_steps={self.trial_steps}")
            t = self.ptr
            self.obs[:, t] = self.prev_obs
            self.action[:, t] = td["prev_action"].reshape(self.batch_size, -1).argmax(-1)
            self.reward[:, t] = td["prev_reward"].reshape(-1)
            ended = td["episode_done"].reshape(-1)
            self.done[:, t] = ended
            self.ptr += 1
            if ended.any():
                if not ended.all():
                    raise ValueError("the in-trial learner needs fixed-length episodes (every env ends together)")
                self.end_episode()
        self.prev_obs = obs

    def end_episode(self) -> None:
        """Critic update on the episode just ended, then the policy update(s) over the window."""
        t0, t1 = self.episode_start, self.ptr
        self.ret[:, t0:t1] = returns_to_go(self.reward[:, t0:t1])
        pair = torch.einsum("bls,bla->bsa", self.obs[:, t0:t1], F.one_hot(self.action[:, t0:t1], self.num_actions).float())
        self.counts += pair
        self.q_sum += torch.einsum("bls,bla->bsa", self.obs[:, t0:t1],
                                   F.one_hot(self.action[:, t0:t1], self.num_actions) * self.ret[:, t0:t1, None])
        self.episode_start = t1
        window = self.window_batch()
        for _ in range(self.inner_steps):
            if self.meta_weight is not None:
                loss, W1 = meta_loss(self.W, window, self.objective, self.lr)
                with torch.enable_grad():  # the trial is played under no_grad
                    (self.meta_weight * loss.mean()).backward()
                self.meta_values.append(-loss.mean().item())
                self.W = W1.detach()
            else:
                self.W = inner_step(self.W, window, self.objective, self.lr).detach()

    def window_batch(self) -> dict[str, torch.Tensor]:
        """The last ``window`` steps, with the critic's values at their states and the trial time."""
        t0, t1 = max(0, self.ptr - self.window), self.ptr
        obs = self.obs[:, t0:t1]
        q = torch.einsum("bls,bsa->bla", obs, critic_values(self.q_sum, self.counts))
        time = torch.arange(t0 + 1, t1 + 1, device=obs.device, dtype=obs.dtype) / self.trial_steps
        return {
            "obs": obs, "action": self.action[:, t0:t1], "reward": self.reward[:, t0:t1],
            "done": self.done[:, t0:t1], "ret": self.ret[:, t0:t1], "q": q,
            "time": time.expand(obs.shape[0], -1),
        }

    def act(self, td: TensorDictBase) -> torch.Tensor:  # noqa: D102
        logits = torch.einsum("bs,bsa->ba", self.prev_obs, self.W)
        return torch.multinomial(torch.softmax(logits, -1), 1).squeeze(-1)
