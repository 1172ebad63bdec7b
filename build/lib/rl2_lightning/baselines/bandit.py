"""Bernoulli-bandit baselines of the paper's Table 1, batched over tasks.

Every policy keeps per-arm success and failure counts ``[num_envs, num_arms]`` from the trial's pulls
(prior Beta(1, 1), i.e. "one success and one failure" before the first pull) and picks an arm from them:

* :class:`Greedy` and :class:`EpsilonGreedy` — posterior mean ``(s + 1) / (n + 2)``;
* :class:`UCB1` — ``mean + c * sqrt(2 log t / T_i)`` with the prior's pseudo-pulls counted in ``T_i``, ``t``;
* :class:`ThompsonSampling` / :class:`OptimisticThompsonSampling` — the best arm of one posterior draw,
  or of the most probable of ``N`` draws (the RL² authors' OTS; ``N = 1`` is Thompson sampling); draws
  are made by inverse CDF from precomputed Beta quantile tables (:func:`beta_quantile_table`);
* :class:`Gittins` — the Gittins index of each arm's posterior for a (tuned) discount, looked up in a
  table from :mod:`rl2_lightning.baselines.gittins`.
"""

from __future__ import annotations

import functools

import torch
from tensordict import TensorDictBase

from rl2_lightning.baselines.common import Baseline, RandomPolicy, argmax_random_ties, per_env
from rl2_lightning.baselines.gittins import gittins_table


class BanditBaseline(Baseline):
    """Keeps ``successes`` and ``failures`` per arm and env; subclasses choose from them."""

    def allocate(self, batch: int, device: torch.device) -> None:  # noqa: D102
        self.successes = torch.zeros(batch, self.num_actions, device=device)
        self.failures = torch.zeros(batch, self.num_actions, device=device)

    def reset_stats(self, mask: torch.Tensor) -> None:  # noqa: D102
        self.successes[mask] = 0.0
        self.failures[mask] = 0.0

    def observe(self, td: TensorDictBase) -> None:  # noqa: D102
        pulled, reward = td["prev_action"], td["prev_reward"]  # zero at a trial start
        self.successes += pulled * reward
        self.failures += pulled * (1.0 - reward)

    def posterior_mean(self) -> torch.Tensor:
        """Mean of each arm's Beta(1 + s, 1 + f) posterior."""
        return (self.successes + 1.0) / (self.successes + self.failures + 2.0)


class Greedy(BanditBaseline):
    """Pulls the arm with the highest posterior mean."""

    def act(self, td: TensorDictBase) -> torch.Tensor:  # noqa: D102
        return argmax_random_ties(self.posterior_mean())


class EpsilonGreedy(BanditBaseline):
    """Greedy, except that with probability ``epsilon`` it pulls a uniformly random arm."""

    def __init__(self, num_actions: int, epsilon: float | torch.Tensor = 0.1):
        super().__init__(num_actions)
        self.epsilon = epsilon

    def act(self, td: TensorDictBase) -> torch.Tensor:  # noqa: D102
        greedy = argmax_random_ties(self.posterior_mean())
        eps = per_env(self.epsilon, self.batch_size, greedy.device).squeeze(1)
        explore = torch.rand(self.batch_size, device=greedy.device) < eps
        return torch.where(explore, torch.randint_like(greedy, self.num_actions), greedy)


class UCB1(BanditBaseline):
    """UCB1 (Auer et al. 2002) with an exploration scale ``c``: ``mean + c * sqrt(2 log t / T_i)``."""

    def __init__(self, num_actions: int, c: float | torch.Tensor = 1.0):
        super().__init__(num_actions)
        self.c = c

    def act(self, td: TensorDictBase) -> torch.Tensor:  # noqa: D102
        pulls = self.successes + self.failures + 2.0  # counts start at one success and one failure
        total = pulls.sum(-1, keepdim=True)
        c = per_env(self.c, self.batch_size, pulls.device)
        return argmax_random_ties(self.posterior_mean() + c * torch.sqrt(2.0 * torch.log(total) / pulls))


# ------------------------------------------------------------------------------------------------
# Thompson sampling by inverse CDF

QUANTILE_LOGITS = torch.linspace(-12.0, 12.0, 129, dtype=torch.float64)


def _state_index(successes: torch.Tensor, failures: torch.Tensor) -> torch.Tensor:
    """Row of state (s, f) in the triangular tables: states ordered by pulls ``n = s + f``, then ``s``."""
    n = successes + failures
    return n * (n + 1) // 2 + successes


@functools.lru_cache(maxsize=4)
def beta_quantile_table(max_pulls: int, x_points: int = 2049) -> torch.Tensor:
    """Quantiles of Beta(1 + s, 1 + f) at levels ``sigmoid(QUANTILE_LOGITS)``, for all ``s + f <= max_pulls``.

    Row :func:`_state_index` ``(s, f)``; float32 ``[num_states, len(QUANTILE_LOGITS)]``. The CDFs are
    computed exactly on a grid of ``x`` by the recurrence ``I_x(a+1, b) = I_x(a, b) - x^a (1-x)^b / (a B(a, b))``
    along the anti-diagonals, then inverted by linear interpolation.
    """
    dt = torch.float64
    x = torch.linspace(0.0, 1.0, x_points, dtype=dt)
    logx, log1mx = torch.log(x), torch.log1p(-x)
    levels = torch.sigmoid(QUANTILE_LOGITS)
    rows = []
    cdf = x.unsqueeze(0)  # diagonal a + b = 2: Beta(1, 1)
    for n in range(max_pulls + 1):
        d = n + 2  # a + b on this diagonal; a = 1 .. d - 1 (s = a - 1)
        i = torch.searchsorted(cdf, levels.expand(cdf.shape[0], -1).contiguous()).clamp(1, x_points - 1)
        f_lo, f_hi = cdf.gather(1, i - 1), cdf.gather(1, i)
        w = ((levels - f_lo) / (f_hi - f_lo).clamp_min(1e-300)).clamp(0, 1)
        rows.append((x[i - 1] + w * (x[i] - x[i - 1])).to(torch.float32))
        if n == max_pulls:
            break
        a = torch.arange(1, d, dtype=dt).unsqueeze(1)
        b = d - a
        log_term = a * logx + b * log1mx - torch.log(a) - (torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b))
        first = 1.0 - torch.exp(d * log1mx).unsqueeze(0)  # I_x(1, d)
        cdf = torch.cat([first, (cdf - torch.exp(log_term)).clamp(0.0, 1.0)])
    return torch.cat(rows)


def _quantile_lookup(row_offset: torch.Tensor, logit: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Interpolate the quantile tables: ``row_offset`` = state row × levels, ``logit`` = logit of the level."""
    z = QUANTILE_LOGITS
    pos = ((logit - z[0].item()) / (z[1] - z[0]).item()).clamp(0, len(z) - 1 - 1e-6)
    j = pos.floor()
    w = (pos - j).to(table.dtype)
    flat = row_offset + j.long()
    lo, hi = table.view(-1)[flat], table.view(-1)[flat + 1]
    return lo + w * (hi - lo)


def sample_max_beta(
    successes: torch.Tensor, failures: torch.Tensor, num_samples: torch.Tensor, table: torch.Tensor
) -> torch.Tensor:
    """The largest of ``num_samples`` independent Beta(1 + s, 1 + f) draws, per element.

    The maximum of ``N`` draws is the ``U ** (1 / N)`` quantile for ``U ~ U(0, 1)``.
    """
    log_q = torch.log(torch.rand_like(successes, dtype=torch.float64).clamp_min(1e-300)) / num_samples
    logit = log_q - torch.log(-torch.expm1(log_q))
    row_offset = _state_index(successes.long(), failures.long()) * table.shape[1]
    return _quantile_lookup(row_offset, logit, table)


class OptimisticThompsonSampling(BanditBaseline):
    """Thompson sampling with ``num_samples`` posterior draws per step (a number or one per env).

    ``rule="density"`` (default) follows the RL² authors' baseline code (rllab ``sandbox/rocky/neural_learner``,
    ``OptimisticThompsonSampling``): of ``N`` joint draws of the arm means it keeps the one with the highest
    posterior density and pulls its best arm; large ``N`` approaches greedy play on the posterior mode.
    ``rule="max"`` is the per-arm reading (May et al. 2012): each arm's score is the largest of its ``N``
    draws, so large ``N`` explores more. ``N = 1`` is Thompson sampling under either rule.
    ``max_pulls`` (the trial length) sizes the quantile table.
    """

    def __init__(self, num_actions: int, max_pulls: int, num_samples: float | torch.Tensor = 1, rule: str = "density"):
        super().__init__(num_actions)
        if rule not in ("density", "max"):
            raise ValueError(f"rule={rule!r} is unknown; allowed: density, max")
        self.num_samples, self.rule = num_samples, rule
        self.table = beta_quantile_table(int(max_pulls))

    def act(self, td: TensorDictBase) -> torch.Tensor:  # noqa: D102
        n = per_env(self.num_samples, self.batch_size, self.successes.device, torch.float64)
        if self.rule == "max":
            return argmax_random_ties(sample_max_beta(self.successes, self.failures, n, self.table))
        s, f = self.successes, self.failures
        row_offset = _state_index(s.long(), f.long()) * self.table.shape[1]
        best_score = torch.full((self.batch_size,), -torch.inf, dtype=torch.float64)
        best = torch.zeros_like(s)
        rows = torch.arange(self.batch_size)
        chunk = max(1, 2_000_000 // s.numel())  # draws per pass, to bound memory
        for start in range(0, int(n.max()), chunk):
            m = min(chunk, int(n.max()) - start)
            theta = _quantile_lookup(row_offset, torch.logit(torch.rand(m, *s.shape)), self.table)  # one draw each
            t = theta.clamp(1e-7, 1 - 1e-7)
            # log posterior density up to a per-arm constant: (a - 1) log x + (b - 1) log(1 - x)
            score = (s * t.log() + f * torch.log1p(-t)).sum(-1).double()  # [m, B]
            used = (start + torch.arange(m)).unsqueeze(1) < n.reshape(1, -1)
            score = torch.where(used, score, -torch.inf)
            top, j = score.max(0)
            better = top > best_score
            best = torch.where(better.unsqueeze(1), theta[j, rows], best)
            best_score = torch.where(better, top, best_score)
        return argmax_random_ties(best)


class ThompsonSampling(OptimisticThompsonSampling):
    """Thompson sampling: one draw from each arm's Beta posterior."""

    def __init__(self, num_actions: int, max_pulls: int):
        super().__init__(num_actions, max_pulls, num_samples=1)


class Gittins(BanditBaseline):
    """Pulls the arm with the largest Gittins index for discount ``gamma`` (a number or one per env)."""

    def __init__(self, num_actions: int, max_pulls: int, gamma: float | torch.Tensor = 0.9):
        super().__init__(num_actions)
        gammas = torch.as_tensor(gamma, dtype=torch.float64).reshape(-1)
        self.gammas, self.gamma_index = torch.unique(gammas, return_inverse=True)
        # one flat table per distinct discount, rows in _state_index order
        tables = []
        for g in self.gammas.tolist():
            t = gittins_table(int(max_pulls), float(g))
            s, f = torch.meshgrid(torch.arange(t.shape[0]), torch.arange(t.shape[0]), indexing="ij")
            keep = s + f <= max_pulls
            order = torch.argsort(_state_index(s[keep], f[keep]))
            tables.append(t[keep][order].to(torch.float32))
        self.tables = torch.stack(tables)  # [num_gammas, num_states]

    def act(self, td: TensorDictBase) -> torch.Tensor:  # noqa: D102
        state = _state_index(self.successes.long(), self.failures.long())
        g = per_env(self.gamma_index, self.batch_size, state.device, torch.long)
        index = self.tables[g, state]
        return argmax_random_ties(index)


def make_bandit_baseline(name: str, num_arms: int, num_pulls: int, **hparams) -> Baseline:
    """Build a bandit baseline by its table name (see :data:`BANDIT_BASELINES`)."""
    builders = {
        "random": lambda: RandomPolicy(num_arms),
        "gittins": lambda: Gittins(num_arms, num_pulls, **hparams),
        "ts": lambda: ThompsonSampling(num_arms, num_pulls),
        "ots": lambda: OptimisticThompsonSampling(num_arms, num_pulls, **hparams),
        "ucb1": lambda: UCB1(num_arms, **hparams),
        "egreedy": lambda: EpsilonGreedy(num_arms, **hparams),
        "greedy": lambda: Greedy(num_arms),
    }
    if name not in builders:
        raise ValueError(f"unknown bandit baseline {name!r}; allowed: {', '.join(builders)}")
    return builders[name]()


#: table columns, in the paper's order, with their display names
BANDIT_BASELINES = {
    "random": "Random",
    "gittins": "Gittins",
    "ts": "TS",
    "ots": "OTS",
    "ucb1": "UCB1",
    "egreedy": "ε-Greedy",
    "greedy": "Greedy",
}
