"""Shared test helpers."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase


def play_actions(env: EnvBase, actions: torch.Tensor) -> TensorDictBase:
    """Step ``env`` from a reset with the given actions (``[steps, num_envs]``), resetting finished
    trials on the way exactly as a collector does (``step_and_maybe_reset``).

    Returns the stacked transitions, batch ``[num_envs, steps]``: ``data[:, t]`` holds the input of
    step ``t`` (observation, prev_* and ``is_init``) and its result under ``"next"``.
    """
    td = env.reset()
    steps = []
    for action in actions:
        td.set("action", action)
        data, td = env.step_and_maybe_reset(td)
        steps.append(data)
    return torch.stack(steps, dim=1)


@pytest.fixture
def play():
    """:func:`play_actions` as a fixture."""
    return play_actions



@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of many small tensor ops: two threads spin-wait against each
    other when another process shares the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
