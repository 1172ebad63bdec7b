"""RL³'s inner estimates: an ordinary RL algorithm run inside each trial, its output fed to the agent.

RL³ (Bhatia, Nashed & Zilberstein, RLC 2025) keeps RL²'s recurrent policy and slow outer RL, and adds
to each step's input what a plain model-based learner would know about the current task from the
trial so far. :class:`InnerEstimates` is that learner, as a TorchRL transform on a trial env:

* per env it keeps the trial's counts ``n(s, a)``, reward sums and transition counts ``N(s, a, s')``,
  cleared when a trial starts and carried across the trial's inner episodes;
* from them, the empirical model (:func:`empirical_model`: mean rewards and transition frequencies,
  with a prior for unvisited pairs) and finite-horizon value iteration over the episode's remaining
  steps (:func:`finite_horizon_q`) give the current state's action values;
* it appends ``[(Q(s, .) - V(s)) / episode_steps, V(s) / episode_steps, log(1 + n(s, .)) / log(1 +
  trial_steps), remaining episode fraction, remaining trial fraction]`` to ``observation`` (``V = max_a
  Q``), so every memory and algorithm uses them unchanged, and the networks are sized from the env's spec.

The state is read from the observation, which must be one-hot (tabular MDPs, RiverSwim) or the
bandit's one-element placeholder (a single state). Only the agent's own transitions and rewards enter
(no task parameter), so two tasks that produced the same experience give the same inputs. Mazes have
no discrete state; ``docs/rl3.md`` says what they would need.
"""

from __future__ import annotations

import math

import torch
from tensordict import TensorDictBase
from torchrl.data import Composite, Unbounded
from torchrl.envs import Transform


def empirical_model(
    counts: torch.Tensor, reward_sums: torch.Tensor, transition_counts: torch.Tensor, reward_prior: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean rewards ``[B, S, A]`` and transition probabilities ``[B, S, A, S]`` from a trial's counts.

    A visited pair gets its empirical mean reward, and its next-state frequencies once a successor was
    seen (an episode's last step has none: the next observation is the restart state); otherwise the
    prior fills in: ``reward_prior`` and a uniform next state.
    """
    rewards = torch.where(counts > 0, reward_sums / counts.clamp(min=1), torch.full_like(reward_sums, reward_prior))
    seen = transition_counts.sum(-1, keepdim=True)
    uniform = torch.full_like(transition_counts, 1.0 / transition_counts.shape[-1])
    probs = torch.where(seen > 0, transition_counts / seen.clamp(min=1), uniform)
    return rewards, probs


def finite_horizon_q(rewards: torch.Tensor, probs: torch.Tensor, horizon: int) -> torch.Tensor:
    """Undiscounted finite-horizon action values: ``Q[h-1] = R + P V_{h-1}`` for ``h = 1 .. horizon``,
    with ``V_0 = 0`` and ``V_h(s) = max_a Q_h(s, a)``; returns ``[horizon, B, S, A]`` (index ``h - 1``
    holds the values with ``h`` steps to go)."""
    values = torch.zeros(rewards.shape[:-1], dtype=rewards.dtype, device=rewards.device)  # [B, S]
    out = []
    for _ in range(horizon):
        q = rewards + torch.einsum("bsat,bt->bsa", probs, values)
        out.append(q)
        values = q.amax(-1)
    return torch.stack(out)


class InnerEstimates(Transform):
    """Appends RL³'s inner estimates of the current state's actions to the trial env's ``observation``.

    Args:
        num_states: states of the family (the one-hot observation's size; 1 for bandits).
        num_actions: actions of the family.
        episode_steps: steps of one inner episode (the value-iteration horizon at an episode's start).
        trial_steps: steps of one trial (scales the counts and the trial's remaining fraction).
        reward_prior: mean reward assumed for unvisited pairs.
    """

    #: features appended per action (advantage, count) and per step (value, remaining episode and trial fractions)
    PER_ACTION, PER_STEP = 2, 3

    def __init__(self, num_states: int, num_actions: int, episode_steps: int, trial_steps: int, reward_prior: float = 0.0):
        super().__init__(in_keys=["observation"], out_keys=["observation"])
        self.num_states, self.num_actions = int(num_states), int(num_actions)
        self.episode_steps, self.trial_steps = int(episode_steps), int(trial_steps)
        self.reward_prior = float(reward_prior)
        self._batch: torch.Size | None = None

    @property
    def num_features(self) -> int:
        """Values appended to each observation."""
        return self.PER_ACTION * self.num_actions + self.PER_STEP

    # -- per-env trial statistics ----------------------------------------------------------------
    def _allocate(self, batch: torch.Size, device: torch.device) -> None:
        if len(batch) != 1:
            raise ValueError(f"InnerEstimates needs a trial env with one batch dimension, got {tuple(batch)}")
        s, a = self.num_states, self.num_actions
        self._batch = batch
        self.counts = torch.zeros(*batch, s, a, device=device)
        self.reward_sums = torch.zeros(*batch, s, a, device=device)
        self.transition_counts = torch.zeros(*batch, s, a, s, device=device)
        self.state = torch.zeros(*batch, dtype=torch.long, device=device)
        self.episode_t = torch.zeros(*batch, dtype=torch.long, device=device)
        self.trial_t = torch.zeros(*batch, dtype=torch.long, device=device)

    def _clear(self, mask: torch.Tensor) -> None:
        for stat in (self.counts, self.reward_sums, self.transition_counts):
            stat[mask] = 0
        for clock in (self.episode_t, self.trial_t):
            clock.masked_fill_(mask, 0)

    def _state_of(self, observation: torch.Tensor) -> torch.Tensor:
        raw = observation[..., : self.num_states]
        return raw.argmax(-1) if self.num_states > 1 else torch.zeros(raw.shape[:-1], dtype=torch.long, device=raw.device)

    def _features(self, observation: torch.Tensor) -> torch.Tensor:
        """``observation`` with the current state's estimates appended (the state read from it)."""
        self.state = self._state_of(observation)
        rewards, probs = empirical_model(self.counts, self.reward_sums, self.transition_counts, self.reward_prior)
        q_all = finite_horizon_q(rewards, probs, self.episode_steps)  # [H, B, S, A]
        state, to_go = self.state, (self.episode_steps - self.episode_t).clamp(1, self.episode_steps)
        rows = torch.arange(state.numel(), device=state.device)
        q = q_all[to_go - 1, rows, state]  # [B, A]
        n = self.counts[rows, state]
        v = q.amax(-1, keepdim=True)
        feats = torch.cat(
            [
                (q - v) / self.episode_steps,  # advantages: 0 for the greedy action(s), as RL³'s code feeds them
                v / self.episode_steps,
                torch.log1p(n) / math.log1p(self.trial_steps),
                (to_go.to(q.dtype) / self.episode_steps).unsqueeze(-1),
                ((self.trial_steps - self.trial_t).clamp(min=0).to(q.dtype) / self.trial_steps).unsqueeze(-1),
            ],
            -1,
        )
        return torch.cat([observation, feats.to(observation.dtype)], -1)

    # -- TorchRL hooks ----------------------------------------------------------------------------
    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        obs = tensordict_reset.get("observation")
        batch = obs.shape[:-1]
        if self._batch != batch:
            self._allocate(batch, obs.device)
        reset = tensordict.get("_reset", None) if tensordict is not None else None
        mask = torch.ones(batch, dtype=torch.bool, device=obs.device) if reset is None else reset.reshape(batch)
        self._clear(mask)
        # envs not being reset keep their observation as it was (already with features)
        fresh = self._features(obs)
        if reset is not None and not mask.all():
            old = tensordict.get("observation")
            fresh = torch.where(mask.unsqueeze(-1), fresh, old)
            self.state = self._state_of(fresh)
        tensordict_reset.set("observation", fresh)
        return tensordict_reset

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        batch = self._batch
        action = tensordict.get("action").reshape(batch)
        reward = next_tensordict.get("reward").reshape(batch)
        obs = next_tensordict.get("observation")
        valid = tensordict.get("valid", None)  # padded trials idle after their end: nothing to learn there
        w = torch.ones(batch, device=obs.device) if valid is None else valid.reshape(batch).to(obs.dtype)
        rows = torch.arange(batch.numel(), device=obs.device)
        self.counts.index_put_((rows, self.state, action), w, accumulate=True)
        self.reward_sums.index_put_((rows, self.state, action), reward * w, accumulate=True)
        episode_done = next_tensordict.get("episode_done").reshape(batch)
        # after an episode's last step the observation is the next episode's start, not a successor
        moved = w * (~episode_done).to(w.dtype)
        self.transition_counts.index_put_((rows, self.state, action, self._state_of(obs)), moved, accumulate=True)
        self.episode_t = torch.where(episode_done, torch.zeros_like(self.episode_t), self.episode_t + 1)
        self.trial_t = self.trial_t + 1
        trial_done = next_tensordict.get("trial_done", None)
        if trial_done is not None:
            # the no-reset ablation starts the next trial (a new task) inside step(): forget the last one
            self._clear(trial_done.reshape(batch) & ~next_tensordict.get("done").reshape(batch))
        next_tensordict.set("observation", self._features(obs))
        return next_tensordict

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:  # only reached through _step / _reset
        return next_tensordict

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:  # noqa: D102
        spec = observation_spec["observation"]
        shape = (*spec.shape[:-1], spec.shape[-1] + self.num_features)
        observation_spec["observation"] = Unbounded(shape=shape, dtype=spec.dtype, device=spec.device)
        return observation_spec


def greedy_on_estimates(family: str, task_set: str, episodes_per_trial: int, num_tasks: int = 1000, seed: int = 0,
                        inner_prior: float | None = None, **simulator_kwargs) -> tuple[float, float]:
    """Mean trial return and 95% half-width of acting ``argmax`` of the appended advantages (no learning):
    what the inner estimates alone earn, a reference for a trained RL³ policy."""
    from torchrl.envs.utils import step_mdp

    from rl2_lightning.envs import make_trial_env

    env = make_trial_env(family, num_tasks, episodes_per_trial, seed=seed, task_set=task_set, inner_estimates=True,
                         inner_prior=inner_prior, **simulator_kwargs)
    num_states, num_actions = env.base_env.simulator.observation_shape[0], env.base_env.simulator.num_actions
    td, total = env.reset(), torch.zeros(num_tasks)
    for _ in range(env.base_env.trial_steps):
        td["action"] = td["observation"][:, num_states : num_states + num_actions].argmax(-1)
        td = env.step(td)
        total += td["next", "reward"].reshape(num_tasks)
        td = step_mdp(td)
    env.close()
    return total.mean().item(), 1.96 * total.std().item() / math.sqrt(num_tasks)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Greedy on RL³'s inner estimates, on a fixed task set (tabular MDPs)")
    parser.add_argument("--greedy", nargs=2, metavar=("TASK_SET", "EPISODES"), required=True)
    parser.add_argument("--prior", type=float, default=None, help="env.inner_prior (default: the family's mean, 1.0)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    mean, ci = greedy_on_estimates("tabular", args.greedy[0], int(args.greedy[1]), inner_prior=args.prior)
    print(f"greedy on the inner estimates (prior {args.prior or 'default'}), tabular_n{args.greedy[1]}, "
          f"{args.greedy[0]}: {mean:.1f} ± {ci:.1f}")
