"""Training scalars of TensorBoard folders: exported to a CSV, read back, merged over a resume, drawn."""

from __future__ import annotations

import pytest
from torch.utils.tensorboard import SummaryWriter

from rl2_lightning.evaluation.scalars import export, main, read_scalars


def _log(folder, points: dict[str, list[tuple[int, float]]]) -> None:
    writer = SummaryWriter(str(folder))
    for tag, series in points.items():
        for step, value in series:
            writer.add_scalar(tag, value, global_step=step)
    writer.close()


def test_export_merges_a_resumed_runs_folders_and_reads_back_the_same_points(tmp_path):
    first, resumed = tmp_path / "a" / "tb", tmp_path / "b" / "tb"
    _log(first, {"train/explained_variance": [(100, -0.5), (200, 0.25)], "train/entropy": [(100, 1.5), (200, 1.25)]})
    # the resumed stage replays the frame count 200 (a mid-epoch stop) and goes on
    _log(resumed, {"train/explained_variance": [(200, 0.5), (300, 0.75)], "train/entropy": [(200, 1.0), (300, 0.5)]})
    out = tmp_path / "stats.csv"
    assert export([first, resumed], out, ("train/explained_variance", "train/entropy")) == 3
    assert out.read_text().splitlines() == [
        "frames,train/explained_variance,train/entropy", "100,-0.5,1.5", "200,0.5,1", "300,0.75,0.5",
    ]
    assert read_scalars(out) == {
        "train/explained_variance": {100: -0.5, 200: 0.5, 300: 0.75},
        "train/entropy": {100: 1.5, 200: 1.0, 300: 0.5},
    }
    assert read_scalars([first, resumed]) == read_scalars(out)


def test_compare_draws_csv_and_tensorboard_runs_and_refuses_unknown_scalars_in_one_line(tmp_path, capsys):
    tb = tmp_path / "run" / "tb"
    _log(tb, {"train/explained_variance": [(10, 0.1), (20, 0.2)], "train/entropy": [(10, 1.6), (20, 1.5)],
              "train/trial_return": [(10, 100.0), (20, 101.0)]})
    csv = tmp_path / "stats.csv"
    main(["--export", str(tb), "--out", str(csv), "--tags", "train/explained_variance", "train/entropy"])
    everything = tmp_path / "all.csv"  # by default: the usual statistics this run has (no gradient norms here)
    main(["--export", str(tb), "--out", str(everything)])
    assert everything.read_text().splitlines()[0] == "frames,train/trial_return,train/explained_variance,train/entropy"
    png = tmp_path / "fig.png"
    main(["--compare", f"csv={csv}", f"tb={tb}", "--tags", "train/explained_variance", "train/entropy", "--out", str(png)])
    assert png.stat().st_size > 1000
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"no scalar train/nothing in .*; it has .*train/entropy"):
        main(["--export", str(tb), "--out", str(tmp_path / "x.csv"), "--tags", "train/nothing"])
    with pytest.raises(SystemExit, match=r"no run has the scalar train/nothing"):
        main(["--compare", f"csv={csv}", "--tags", "train/nothing", "--out", str(png)])
    with pytest.raises(SystemExit, match=r"holds no TensorBoard event files"):
        main(["--export", str(tmp_path / "empty"), "--out", str(tmp_path / "y.csv")])
