"""Objectives that train a fresh in-trial learner: the learned one (MetaGenRL's L_α) and two hand-made ones.

An objective maps a window of one agent's experience, and that agent's policy log-probabilities over it,
to a scalar loss per agent that the learner descends by SGD. The window is a dict of tensors, batch ``B``
(agents), time ``L`` (steps, oldest first), actions ``A``:

* ``reward [B, L]``, ``done [B, L]`` (the step ended an episode), ``time [B, L]`` (share of the trial elapsed);
* ``action [B, L]`` (int64, the action taken), ``q [B, L, A]`` (the agent's critic at the step's state,
  no gradient), ``ret [B, L]`` (return to the end of the step's episode).

Every objective reads only what any discrete-action RL problem has, so one objective trains agents of
families with different observation and action sizes. :class:`LearnedObjective` reads the window
*backwards* in time with an LSTM, so when it scores a step it has already seen what followed it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchrl.modules import LSTM

#: per-step inputs shared by every action: reward, episode end, trial time, state value
STEP_FEATURES = 4
#: per-action inputs: critic value, advantage, taken-indicator, log-probability, probability
ACTION_FEATURES = 5


def value_scale(q: torch.Tensor) -> torch.Tensor:
    """``[B, 1, 1]``: the size of an agent's critic values ``q [B, L, A]`` over its window (spread plus
    mean magnitude, at least 0.05), so that the learned objective sees families whose rewards differ by
    orders of magnitude on one scale. Only the critic sets it, so a step's reward reaches no other step
    except through the LSTM."""
    spread = q.std((1, 2), unbiased=False, keepdim=True) if q[0].numel() > 1 else torch.zeros_like(q[:, :1, :1])
    return (spread + q.mean((1, 2), keepdim=True).abs()).clamp(min=0.05)


def objective_inputs(window: dict[str, torch.Tensor], logp: torch.Tensor) -> torch.Tensor:
    """``[B, L, A, STEP_FEATURES + ACTION_FEATURES]``: the encoding each (step, action) pair is read with.

    Values and rewards are divided by :func:`value_scale` and centred on the agent's mean value. The
    probabilities carry the gradient to the policy; everything else is data.
    """
    B, L, A = logp.shape
    q = window["q"]
    scale = value_scale(q)
    centre = q.mean((1, 2), keepdim=True)
    pi = logp.exp()
    v = (pi.detach() * q).sum(-1, keepdim=True)  # [B, L, 1]
    step = torch.stack(
        [window["reward"] / scale[..., 0], window["done"].float(), window["time"], ((v - centre) / scale)[..., 0]], -1
    )
    taken = F.one_hot(window["action"], A).float()
    per_action = torch.stack([(q - centre) / scale, (q - v) / scale, taken, logp, pi], -1)
    return torch.cat([step.unsqueeze(2).expand(B, L, A, STEP_FEATURES), per_action], -1)


class LearnedObjective(nn.Module):
    """MetaGenRL's L_α for discrete actions.

    Each action of each step is encoded by :func:`objective_inputs`; an LSTM reads each action's sequence
    from the window's last step to its first (actions are a batch dimension, so the network does not
    depend on the action count); a small head maps the LSTM state, the log-probability and the
    taken-indicator to a loss term. The loss of an agent is the per-step sum over actions, averaged over
    steps: the gradient each logit receives does not shrink as the action count grows.
    """

    def __init__(self, hidden_size: int = 32):
        super().__init__()
        self.hidden_size = int(hidden_size)
        self.lstm = LSTM(STEP_FEATURES + ACTION_FEATURES, self.hidden_size, batch_first=True)
        self.head = nn.Sequential(nn.Linear(self.hidden_size + 2, self.hidden_size), nn.Tanh(),
                                  nn.Linear(self.hidden_size, 1, bias=False))  # a constant would train nothing

    def terms(self, window: dict[str, torch.Tensor], logp: torch.Tensor) -> torch.Tensor:
        """``[B, L, A]``: the loss term of every (step, action) pair."""
        B, L, A = logp.shape
        x = objective_inputs(window, logp)
        seq = x.permute(0, 2, 1, 3).reshape(B * A, L, -1).flip(1)  # backwards in time
        h0 = x.new_zeros(1, B * A, self.hidden_size)
        h, _ = self.lstm(seq, (h0, h0.clone()))
        h = h.flip(1).reshape(B, A, L, -1).permute(0, 2, 1, 3)  # [B, L, A, H], forward order again
        taken = F.one_hot(window["action"], A).float()
        return self.head(torch.cat([h, logp.unsqueeze(-1), taken.unsqueeze(-1)], -1)).squeeze(-1)

    def forward(self, window: dict[str, torch.Tensor], logp: torch.Tensor) -> torch.Tensor:
        """The loss of every agent, ``[B]``."""
        return self.terms(window, logp).sum(-1).mean(-1)


class Reinforce(nn.Module):
    """REINFORCE with a baseline: ``-log π(a_t|s_t) (G_t - b)``, ``G_t`` the return to the end of the
    step's episode and ``b`` the agent's mean of it over the window; plus an entropy bonus."""

    def __init__(self, entropy: float = 0.0):
        super().__init__()
        self.entropy = float(entropy)

    def forward(self, window: dict[str, torch.Tensor], logp: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ret = window["ret"]
        adv = ret - ret.mean(1, keepdim=True)
        taken = logp.gather(-1, window["action"].unsqueeze(-1)).squeeze(-1)
        return -(taken * adv).mean(-1) - self.entropy * _entropy(logp).mean(-1)


class ActorCritic(nn.Module):
    """Advantage actor-critic with the agent's own critic: ``-log π(a_t|s_t) (Q(s_t, a_t) - V(s_t))``,
    ``V = Σ_a π(a|s) Q(s, a)``; plus an entropy bonus."""

    def __init__(self, entropy: float = 0.0):
        super().__init__()
        self.entropy = float(entropy)

    def forward(self, window: dict[str, torch.Tensor], logp: torch.Tensor) -> torch.Tensor:  # noqa: D102
        q = window["q"]
        v = (logp.exp().detach() * q).sum(-1)
        taken_q = q.gather(-1, window["action"].unsqueeze(-1)).squeeze(-1)
        taken = logp.gather(-1, window["action"].unsqueeze(-1)).squeeze(-1)
        return -(taken * (taken_q - v)).mean(-1) - self.entropy * _entropy(logp).mean(-1)


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    return -(logp.exp() * logp).sum(-1)


def expected_value(logp: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``Σ_a π(a|s) Q(s, a)`` averaged over the window's steps, per agent ``[B]``: MetaGenRL's meta-objective
    for discrete actions (the critic's value of the policy), differentiable in the policy."""
    return (logp.exp() * q).sum(-1).mean(-1)
