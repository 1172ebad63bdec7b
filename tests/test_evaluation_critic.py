"""The critic diagnostic: discounted returns by hand, and a trained run's critic set beside them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from trainkit import compose_cfg

from rl2_lightning.algos.base import discounted_returns
from rl2_lightning.evaluation.critic import main
from rl2_lightning.module import explained_variance
from rl2_lightning.train import train


def test_discounted_returns_by_hand_restart_after_each_trials_end():
    reward = torch.tensor([[1.0, 2.0, 4.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    # row 1: one trial; row 2: a trial of two steps, then padding; row 3: trials of one and two steps
    done = torch.tensor([[False, False, True], [False, True, False], [True, False, True]])
    got = discounted_returns(reward, done, gamma=0.5)
    # 1 + 0.5 * (2 + 0.5 * 4) = 3 | 1 + 0.5 * 1 = 1.5, padding 0 | 1 (its trial ends), 1 + 0.5 * 1 = 1.5, 1
    torch.testing.assert_close(got, torch.tensor([[3.0, 4.0, 4.0], [1.5, 1.0, 0.0], [1.0, 1.5, 1.0]]))
    torch.testing.assert_close(discounted_returns(reward[..., None], done[..., None], 0.5), got[..., None])
    assert float(explained_variance(got[0], got[0])) == 1.0
    assert float(explained_variance(torch.full((3,), got[0].mean().item()), got[0])) == pytest.approx(0.0)


def test_the_command_reports_a_trained_value_normalised_critic_in_return_units(tmp_path, capsys):
    out = train(compose_cfg([f"runs_dir={tmp_path}", "callbacks.metatest=null", "trainer.max_epochs=2",
                             "algo.value_norm=true", "experiment=critic"]))
    ckpt = Path(out["run_dir"]) / "checkpoints" / "last.ckpt"
    fit = main(["conf=bandit_k5_n10", "model.hidden_size=16", "model.embed_size=16", f"ckpt={ckpt}",
                "--num-tasks", "20", "--out", str(tmp_path / "critic.png")])
    values, returns, valid = fit["values"], fit["returns"], fit["valid"]
    assert values.shape == returns.shape == (20, 10) and bool(valid.all())
    # denormalised: two tiny iterations leave the critic's output near 0 in normalised units, so its values sit
    # near the targets' running mean (a few reward units here), not near 0
    mean, sd = out["module"].algo.value_moments[0].item(), out["module"].algo.value_moments[1].sqrt().item()
    assert mean > sd and abs(values.mean().item() - mean) < 0.25 * sd
    text = capsys.readouterr().out
    assert "| 0 |" in text and "| 9 |" in text and "explained variance of the returns" in text
    assert (tmp_path / "critic.png").stat().st_size > 1000
    with pytest.raises(SystemExit, match="shipped tabular_n10 critic predicts normalised returns"):
        main(["conf=tabular_n10", "recipe=authors", "ckpt=pretrained"])
