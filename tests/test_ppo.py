"""The maths over whole trials (trial GAE and minibatches in rl2_lightning/algos/base.py, the logged statistics in rl2_lightning/module.py), by hand."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from trainkit import compose_cfg, module_of

from rl2_lightning.algos.base import minibatch_indices, next_trial_values
from rl2_lightning.module import explained_variance, returns_per_episode


def col(*xs, dtype=torch.float32):
    """A [1, T, 1] tensor from a list of values."""
    return torch.tensor(xs, dtype=dtype).view(1, -1, 1)


def two_episode_trial() -> TensorDict:
    """One trial of two 2-step episodes: the inner episode ends at t=1, the trial at t=3."""
    return TensorDict(
        {
            "state_value": col(0.5, 0.4, 0.3, 0.2),
            "episode_index": col(0, 0, 1, 1, dtype=torch.long),
            "next": {
                "reward": col(1.0, 0.0, 0.0, 1.0),
                "episode_done": col(False, True, False, True, dtype=torch.bool),
                "trial_done": col(False, False, False, True, dtype=torch.bool),
                "done": col(False, False, False, True, dtype=torch.bool),
                "terminated": col(False, False, False, True, dtype=torch.bool),
            },
        },
        batch_size=[1, 4],
    )


def test_next_trial_values_shift_within_trial_and_zero_at_its_end():
    values = col(0.5, 0.4, 0.3, 0.2)
    trial_done = col(False, False, False, True, dtype=torch.bool)
    assert next_trial_values(values, trial_done).flatten().tolist() == pytest.approx([0.4, 0.3, 0.2, 0.0])
    # a trial boundary inside the row (no-reset ablation) also stops the shift
    trial_done = col(False, True, False, True, dtype=torch.bool)
    assert next_trial_values(values, trial_done).flatten().tolist() == pytest.approx([0.4, 0.0, 0.2, 0.0])


def test_gae_over_two_episode_trial_matches_hand_computation_without_inner_masking():
    cfg = compose_cfg(["algo.gamma=0.9", "algo.lmbda=0.5"])
    module = module_of(cfg)
    data = two_episode_trial()
    data.set(("next", "state_value"), next_trial_values(data["state_value"], data["next", "trial_done"]))
    module.algo.gae(data)
    # By hand, gamma=0.9, lambda=0.5 (gamma*lambda=0.45):
    # deltas: 1+0.9*0.4-0.5=0.86, 0+0.9*0.3-0.4=-0.13, 0+0.9*0.2-0.3=-0.12, 1+0-0.2=0.8
    # advantages backwards: 0.8; -0.12+0.45*0.8=0.24; -0.13+0.45*0.24=-0.022; 0.86+0.45*(-0.022)=0.8501
    expected = [0.8501, -0.022, 0.24, 0.8]
    assert data["advantage"].flatten().tolist() == pytest.approx(expected, abs=1e-6)
    assert data["value_target"].flatten().tolist() == pytest.approx(
        [a + v for a, v in zip(expected, [0.5, 0.4, 0.3, 0.2])], abs=1e-6
    )
    # The wrong, masked version would cut the trial at the inner episode end: advantage at t=1 = -0.4.
    assert data["advantage"][0, 1].item() != pytest.approx(-0.4)


def test_returns_per_episode_by_hand():
    data = two_episode_trial()
    trial, per_episode = returns_per_episode(
        data["next", "reward"], data["episode_index"], data["next", "trial_done"], 2
    )
    assert trial.item() == pytest.approx(2.0)
    assert per_episode.tolist() == pytest.approx([1.0, 1.0])


def test_minibatches_partition_the_trial_axis():
    parts = minibatch_indices(10, 3, torch.Generator().manual_seed(0))
    assert len(parts) == 3
    assert sorted(torch.cat(parts).tolist()) == list(range(10))
    assert sorted(len(p) for p in parts) == [3, 3, 4]


def test_explained_variance():
    target = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(target, target).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(target, target.mean()), target).item() == pytest.approx(0.0)
