"""Navigation metrics of maze trials (rl2_lightning/evaluation/scoring.py), on hand-made rollouts."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from rl2_lightning.envs.maze.metrics import navigation_metrics


def rollout(episodes: list[list[tuple[int, bool]]], steps: int) -> TensorDict:
    """Trials given as per-episode (length, success) lists, padded to ``steps``."""
    rows = []
    for trial in episodes:
        index, reward, valid = [], [], []
        for k, (length, success) in enumerate(trial):
            index += [k] * length
            reward += [-0.04] * (length - 1) + [0.96 if success else -0.04]
        valid = [True] * len(index) + [False] * (steps - len(index))
        index += [len(trial)] * (steps - len(index))
        reward += [0.0] * (steps - len(reward))
        rows.append((index, reward, valid))
    t = lambda i, dtype: torch.tensor([r[i] for r in rows], dtype=dtype).unsqueeze(-1)  # noqa: E731
    return TensorDict(
        {"episode_index": t(0, torch.long), "valid": t(2, torch.bool), "next": {"reward": t(1, torch.float32)}},
        batch_size=[len(rows), steps],
    )


def test_success_lengths_and_improvement_by_hand():
    data = rollout(
        [
            [(10, True), (6, True)],  # improved
            [(20, True), (20, True)],  # equal counts as improved
            [(5, True), (8, True)],  # worse
            [(30, False), (12, True)],  # first failed (ran its 30-step horizon), second succeeded
            [(30, False), (30, False)],  # both failed: equal lengths, but no improvement
            [(4, True), (3, False)],  # second failed (a trial cut short): not an improvement
        ],
        steps=60,
    )
    m = navigation_metrics(data, 2)
    assert m["success_ep0"] == pytest.approx(4 / 6) and m["success_ep1"] == pytest.approx(4 / 6)
    assert m["length_ep0"] == pytest.approx((10 + 20 + 5 + 4) / 4)
    assert m["length_ep1"] == pytest.approx((6 + 20 + 8 + 12) / 4)
    se1 = torch.tensor([6.0, 20, 8, 12]).std().item() / 2
    assert m["length_se_ep1"] == pytest.approx(se1)
    assert m["improved"] == pytest.approx(3 / 6)


def test_no_success_gives_nan_lengths():
    m = navigation_metrics(rollout([[(5, False), (5, False)]], steps=10), 2)
    assert m["success_ep0"] == 0 and math.isnan(m["length_ep0"])


def test_learning_curve_reads_every_episode_column_of_a_metatest_csv(tmp_path):
    from rl2_lightning.evaluation.curves import parse_reference, read_curve

    path = tmp_path / "metatest.csv"
    path.write_text("epoch,frames,success_ep0,success_ep1,success_ep10,length_ep0\n"
                    "3,100,0.1,0.2,0.3,50\n7,200,0.4,0.5,0.6,40\n")
    frames, per_episode = read_curve(path, "success")
    assert frames == [100.0, 200.0]
    assert per_episode == [[0.1, 0.4], [0.2, 0.5], [0.3, 0.6]]  # ep0, ep1, ep10: numeric order
    assert parse_reference("random=0.07,0.068") == ("random", [0.07, 0.068])
    with pytest.raises(SystemExit, match="no return_ep"):
        read_curve(path, "return")
    with pytest.raises(SystemExit, match="NAME=v1"):
        parse_reference("random")


def test_tail_slope_and_frames_to_reach_by_hand(tmp_path, capsys):
    from rl2_lightning.evaluation.curves import frames_to_reach, main, read_trial_curve, tail_slope

    # last quarter of 0..4M frames is 3M..4M: points (3, 110) and (4, 112) -> 2 per million frames
    frames = [0.0, 1e6, 2e6, 3e6, 4e6]
    values = [100.0, 104.0, 108.0, 110.0, 112.0]
    assert tail_slope(frames, values) == pytest.approx(2.0)
    assert tail_slope(frames, values, share=1.0) == pytest.approx(3.0)  # all five: least squares by hand
    assert frames_to_reach(120.0, 112.0, 2.0) == pytest.approx(4e6)
    assert frames_to_reach(100.0, 112.0, 2.0) == 0.0
    assert frames_to_reach(120.0, 112.0, -1.0) == float("inf")
    path = tmp_path / "metatest.csv"
    path.write_text("epoch,frames,trial_return,train_s\n" + "".join(
        f"{i},{f:.0f},{v},{60 * i}\n" for i, (f, v) in enumerate(zip(frames, values))))
    assert read_trial_curve(path) == (frames, [0.0, 1.0, 2.0, 3.0, 4.0], values)
    main(["--compare", f"a={path}", "--reference", "Greedy=120", "--reference", "Random=100", "--out", str(tmp_path / "c.png")])
    assert (tmp_path / "c.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "Greedy (120) in 4M more frames" in printed and "Random (100) already reached" in printed
    with pytest.raises(SystemExit, match="NAME=CSV"):
        main(["--compare", str(path), "--out", str(tmp_path / "d.png")])
