"""Tabular-MDP baselines of the paper's Table 2, batched over tasks (TabulaRL conventions, Osband et al.).

Every agent keeps the conjugate posterior of its task from the trial's transitions ``(s, a, r, s')``:

* transitions: Dirichlet(``alpha0 = 1``) prior, ``alpha = 1 + counts[s, a, s']``;
* mean rewards: Normal prior ``N(mu0, 1 / tau0)`` with known reward noise precision ``tau = 1``, so the
  posterior of ``mu[s, a]`` is ``N((mu0 tau0 + tau sum r) / (tau0 + n tau), 1 / (tau0 + n tau))``.

Two priors are offered (``prior=``):

* ``"paper"`` is what TabulaRL's agents use, as the paper ran them: reward means centred at ``mu0 = 0``
  and, per agent, TabulaRL's prior strengths — ``alpha0 = 1, tau0 = 1`` for PSRL, OPSRL and BEB, but a
  near-flat prior for the agents TabulaRL documents as "prior effect -> 0": ε-greedy and greedy
  (``alpha0 = tau0 = 1e-4``, i.e. empirical means and frequencies) and UCRL2 (``alpha0 = 1e-5,
  tau0 = 1e-4``). See :attr:`TabularBaseline.paper_strength`.
* ``"bayes"`` is the true task prior for every agent: ``mu ~ N(1, 1)`` (``mu0 = 1, tau0 = 1``) and
  Dirichlet(1) transitions (``alpha0 = 1``).

At the first step of every episode the agent re-plans by finite-horizon value iteration
(:mod:`rl2_lightning.baselines.planning`) over the episode's ``H`` steps, then acts greedily (ties at
random) on ``Q[h, s]`` during the episode:

* :class:`PSRL` plans in one MDP sampled from the posterior; :class:`OPSRL` takes the element-wise
  largest ``Q`` of ``num_samples`` sampled MDPs (TabulaRL's ``OptimisticPSRL``);
* :class:`UCRL2` plans by extended value iteration in the posterior-mean MDP's confidence set, with
  TabulaRL's radii ``scaling * sqrt(4 log(2 S A (t+1) / delta) / n)`` (rewards) and
  ``scaling * sqrt(4 S log(2 S A (t+1) / delta) / n)`` (L1, transitions), ``t`` the 1-based episode
  number; under the ``paper`` prior with TabulaRL's in-place extended value iteration (``accumulate``);
* :class:`BEB` plans in the mean MDP with the bonus ``beta / (1 + n(s, a))``, ``beta = 2 H^2 scaling``;
* :class:`EpsilonGreedy` / :class:`Greedy` plan in the mean (MAP) MDP and explore with probability ``epsilon``.

The last transition of an episode has no observed next state (the env shows the next episode's start
state instead): it updates the reward posterior only, as in TabulaRL.
"""

from __future__ import annotations


import torch
from tensordict import TensorDictBase

from rl2_lightning.baselines.common import Baseline, RandomPolicy, argmax_random_ties, per_env
from rl2_lightning.baselines.planning import extended_value_iteration, value_iteration

#: reward-mean priors (mu0, tau0) by name; the ``paper`` strengths are overridden per agent (paper_strength)
PRIORS = {"paper": (0.0, 1.0), "bayes": (1.0, 1.0)}


def sample_dirichlet(alpha: torch.Tensor) -> torch.Tensor:
    """One Dirichlet(alpha) draw per row of the last dim (normalised Gamma draws)."""
    g = torch._standard_gamma(alpha)
    return g / g.sum(-1, keepdim=True)


class TabularBaseline(Baseline):
    """Posterior statistics of a tabular task and the once-per-episode plan ``Q[B, H, S, A]``.

    Subclasses implement :meth:`plan` (action values from the posterior) and may override :meth:`act`.
    """

    #: ``(alpha0, tau0)`` under the ``paper`` prior: TabulaRL's constructor defaults for this agent
    paper_strength: tuple[float, float] = (1.0, 1.0)

    def __init__(self, num_states: int, num_actions: int, episode_steps: int, prior: str = "paper"):
        super().__init__(num_actions)
        if prior not in PRIORS:
            raise ValueError(f"prior={prior!r} is unknown; allowed: {', '.join(PRIORS)}")
        self.num_states, self.horizon, self.prior = int(num_states), int(episode_steps), prior
        self.mu0, self.tau0 = PRIORS[prior]
        self.tau = 1.0  # known reward-noise precision (rewards are N(mu, 1))
        self.alpha0 = 1.0
        if prior == "paper":
            self.alpha0, self.tau0 = self.paper_strength

    def allocate(self, batch: int, device: torch.device) -> None:  # noqa: D102
        S, A = self.num_states, self.num_actions
        self.counts = torch.zeros(batch, S, A, S, device=device)  # observed transitions
        self.reward_n = torch.zeros(batch, S, A, device=device)
        self.reward_sum = torch.zeros(batch, S, A, device=device)
        self.state = torch.zeros(batch, dtype=torch.long, device=device)  # state of the previous step
        self.step_in_episode = torch.zeros(batch, dtype=torch.long, device=device)
        self.episode = torch.zeros(batch, dtype=torch.long, device=device)
        self.q = torch.zeros(batch, self.horizon, S, A, device=device)

    def reset_stats(self, mask: torch.Tensor) -> None:  # noqa: D102
        for x in (self.counts, self.reward_n, self.reward_sum):
            x[mask] = 0.0
        self.episode[mask] = 0

    def observe(self, td: TensorDictBase) -> None:  # noqa: D102
        init = td["is_init"].reshape(-1)
        new_episode = td["episode_done"].reshape(-1) | init
        state = td["observation"][..., : self.num_states].argmax(-1)  # the one-hot state (RL³'s features follow it)
        played = ~init  # a previous step of this trial exists
        if played.any():
            b = torch.arange(self.batch_size, device=state.device)
            a = td["prev_action"].argmax(-1)
            r = td["prev_reward"].reshape(-1)
            w = played.to(r.dtype)
            self.reward_n[b, self.state, a] += w
            self.reward_sum[b, self.state, a] += w * r
            # the next state is unobserved after an episode's last step
            self.counts[b, self.state, a, state] += (played & ~new_episode).to(r.dtype)
        self.episode += (new_episode & ~init).long()
        self.step_in_episode = torch.where(new_episode, 0, self.step_in_episode + 1)
        self.state = state
        if new_episode.any():
            q = self.plan()
            self.q[new_episode] = q[new_episode]

    # -- posterior ------------------------------------------------------------------------------

    def transition_mean(self) -> torch.Tensor:
        """Posterior mean of ``P[s, a, :]`` (TabulaRL's MAP MDP)."""
        alpha = self.alpha0 + self.counts
        return alpha / alpha.sum(-1, keepdim=True)

    def reward_posterior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and precision of the posterior of each mean reward ``mu[s, a]``."""
        precision = self.tau0 + self.tau * self.reward_n
        return (self.mu0 * self.tau0 + self.tau * self.reward_sum) / precision, precision

    def sample_mdp(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One MDP ``(R, P)`` per env drawn from the posterior."""
        mean, precision = self.reward_posterior()
        R = mean + torch.randn_like(mean) / precision.sqrt()
        return R, sample_dirichlet(self.alpha0 + self.counts)

    def plan(self) -> torch.Tensor:
        """Action values ``Q[B, H, S, A]`` for the coming episode."""
        raise NotImplementedError

    def act(self, td: TensorDictBase) -> torch.Tensor:  # noqa: D102
        b = torch.arange(self.batch_size, device=self.q.device)
        return argmax_random_ties(self.q[b, self.step_in_episode.clamp(max=self.horizon - 1), self.state])


class PSRL(TabularBaseline):
    """Posterior sampling (Osband, Russo & Van Roy 2013): act optimally in one posterior sample per episode."""

    def plan(self) -> torch.Tensor:  # noqa: D102
        return value_iteration(*self.sample_mdp(), self.horizon)


class OPSRL(TabularBaseline):
    """Optimistic PSRL: the element-wise largest ``Q`` of ``num_samples`` posterior samples (a number or one per env)."""

    def __init__(self, *args, num_samples: int | torch.Tensor = 2, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_samples = num_samples

    def plan(self) -> torch.Tensor:  # noqa: D102
        n = per_env(self.num_samples, self.batch_size, self.counts.device, torch.long).reshape(-1, 1, 1, 1)
        q = None
        for i in range(int(n.max())):
            qi = value_iteration(*self.sample_mdp(), self.horizon)
            q = qi if q is None else torch.where(n > i, torch.maximum(q, qi), q)
        return q


class UCRL2(TabularBaseline):
    """UCRL2 (Jaksch, Ortner & Auer 2010) in its finite-horizon TabulaRL form, confidence radii × ``scaling``."""

    paper_strength = (1e-5, 1e-4)

    def __init__(
        self, *args, scaling: float | torch.Tensor = 1.0, delta: float = 0.05, accumulate: bool | None = None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.scaling, self.delta = scaling, delta
        #: TabulaRL's in-place extended VI (see extended_value_iteration); default: under the paper prior only
        self.accumulate = self.prior == "paper" if accumulate is None else bool(accumulate)

    def plan(self) -> torch.Tensor:  # noqa: D102
        S, A = self.num_states, self.num_actions
        scaling = per_env(self.scaling, self.batch_size, self.counts.device).reshape(-1, 1, 1)
        # TabulaRL's time t is the 1-based episode number; the radii use log(2 S A (t + 1) / delta)
        t = self.episode.to(torch.float32) + 1
        log_term = torch.log(2 * S * A * (t + 1) / self.delta).reshape(-1, 1, 1)
        r_slack = scaling * torch.sqrt(4 * log_term / self.reward_n.clamp(min=1))
        p_slack = scaling * torch.sqrt(4 * S * log_term / self.counts.sum(-1).clamp(min=1))
        mean, _ = self.reward_posterior()
        return extended_value_iteration(
            mean, self.transition_mean(), r_slack, p_slack, self.horizon, accumulate=self.accumulate
        )


class BEB(TabularBaseline):
    """Bayesian exploration bonus (Kolter & Ng 2009): mean MDP plus ``beta / (1 + n(s, a))``, ``beta = 2 H^2 scaling``."""

    def __init__(self, *args, scaling: float | torch.Tensor = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.scaling = scaling

    def plan(self) -> torch.Tensor:  # noqa: D102
        beta = 2 * self.horizon**2 * per_env(self.scaling, self.batch_size, self.counts.device).reshape(-1, 1, 1)
        mean, _ = self.reward_posterior()
        return value_iteration(mean + beta / (1 + self.counts.sum(-1)), self.transition_mean(), self.horizon)


class EpsilonGreedy(TabularBaseline):
    """Optimal in the mean (MAP) MDP, re-planned once per episode; a random action with probability ``epsilon``."""

    paper_strength = (1e-4, 1e-4)

    def __init__(self, *args, epsilon: float | torch.Tensor = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        self.epsilon = epsilon

    def plan(self) -> torch.Tensor:  # noqa: D102
        mean, _ = self.reward_posterior()
        return value_iteration(mean, self.transition_mean(), self.horizon)

    def act(self, td: TensorDictBase) -> torch.Tensor:  # noqa: D102
        greedy = super().act(td)
        eps = per_env(self.epsilon, self.batch_size, greedy.device).squeeze(1)
        explore = torch.rand(self.batch_size, device=greedy.device) < eps
        return torch.where(explore, torch.randint_like(greedy, self.num_actions), greedy)


class Greedy(EpsilonGreedy):
    """Optimal in the mean (MAP) MDP, re-planned once per episode, no exploration."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, epsilon=0.0, **kwargs)


def make_tabular_baseline(
    name: str, num_states: int, num_actions: int, episode_steps: int, prior: str = "paper", **hparams
) -> Baseline:
    """Build a tabular-MDP baseline by its table name (see :data:`TABULAR_BASELINES`)."""
    classes = {"psrl": PSRL, "opsrl": OPSRL, "ucrl2": UCRL2, "beb": BEB, "egreedy": EpsilonGreedy, "greedy": Greedy}
    if name == "random":
        return RandomPolicy(num_actions)
    if name not in classes:
        raise ValueError(f"unknown tabular baseline {name!r}; allowed: random, {', '.join(classes)}")
    return classes[name](num_states, num_actions, episode_steps, prior=prior, **hparams)


#: table columns, in the paper's order, with their display names
TABULAR_BASELINES = {
    "random": "Random",
    "psrl": "PSRL",
    "opsrl": "OPSRL",
    "ucrl2": "UCRL2",
    "beb": "BEB",
    "egreedy": "ε-Greedy",
    "greedy": "Greedy",
}
