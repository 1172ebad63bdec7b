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


def test_within_trial_curves_from_a_run_and_an_evaluation_with_the_late_slope_by_hand(tmp_path, capsys):
    from rl2_lightning.evaluation.curves import late_slope, main, read_within_trial

    # from the fourth episode on: (3, 13), (4, 13.5), (5, 13), (6, 14.5) -> mean x 4.5, mean y 13.5,
    # sxy = -1.5*-0.5 + -0.5*0 + 0.5*-0.5 + 1.5*1 = 2.0, sxx = 5 -> 0.4 per episode
    values = [10.0, 11.0, 12.0, 13.0, 13.5, 13.0, 14.5]
    assert late_slope(values) == pytest.approx(0.4)
    assert late_slope(values, start=5) == pytest.approx(1.5)
    run = tmp_path / "metatest.csv"
    run.write_text("epoch,frames,trial_return,return_ep0,return_ep1,return_ep2\n"
                   "0,100,30,9,10,11\n1,200,33.5,10,11,12.5\n")
    assert read_within_trial(str(run)) == [10.0, 11.0, 12.5]  # the last meta-test
    evaluation = tmp_path / "x_per_episode.csv"
    evaluation.write_text("key,method,episode,mean,ci95\n"
                          "greedy,Greedy,1,11.5,0.1\ngreedy,Greedy,0,10.5,0.1\ngreedy,Greedy,2,12.0,0.1\nrl2,RL²,0,9,0\n")
    assert read_within_trial(f"{evaluation}#Greedy") == [10.5, 11.5, 12.0]  # in episode order
    main(["--within-trial", f"run={run}", f"Greedy={evaluation}#greedy", "--out", str(tmp_path / "w.png")])
    assert (tmp_path / "w.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "run: total 33.5; episodes 1-3 33.5" in printed and "Greedy: total 34.0" in printed
    with pytest.raises(SystemExit, match="no method 'BEB'"):
        read_within_trial(f"{evaluation}#BEB")
    with pytest.raises(SystemExit, match="NAME=metatest.csv"):
        main(["--within-trial", str(run), "--out", str(tmp_path / "v.png")])
