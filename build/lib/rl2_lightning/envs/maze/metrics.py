"""Table 3's navigation metrics of the maze family, from played trials (the family's ``trial_metrics``)."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase


def navigation_metrics(rollout: TensorDictBase, episodes_per_trial: int) -> dict[str, float]:
    """Table 3's columns from maze trials: per episode index, success rate and mean length (with its
    standard error) of the successful episodes; and %improved, the share of trials whose second
    episode reached the goal in no more steps than the first took (a failed first episode counts with
    the length it ran; a failed second episode is no improvement, so two timed-out episodes of equal
    length do not count — with the paper's 99% success rates the distinction is immaterial).

    An episode succeeded when one of its steps paid the goal reward (+1, the only positive reward).
    """
    index = rollout["episode_index"].squeeze(-1)
    valid = rollout["valid"].squeeze(-1) if "valid" in rollout.keys() else torch.ones_like(index, dtype=torch.bool)
    reward = rollout["next", "reward"].squeeze(-1)
    out: dict[str, float] = {}
    lengths, successes = [], []
    for k in range(episodes_per_trial):
        mine = (index == k) & valid
        length = mine.sum(-1).double()
        success = ((reward > 0.5) & mine).any(-1)
        lengths.append(length)
        successes.append(success)
        out[f"success_ep{k}"] = success.double().mean().item()
        ok = length[success]
        out[f"length_ep{k}"] = ok.mean().item() if len(ok) else float("nan")
        out[f"length_se_ep{k}"] = (ok.std() / len(ok) ** 0.5).item() if len(ok) > 1 else float("nan")
    if episodes_per_trial >= 2:
        out["improved"] = ((lengths[1] <= lengths[0]) & successes[1]).double().mean().item()
    return out
