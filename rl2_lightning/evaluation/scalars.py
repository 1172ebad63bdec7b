"""Training statistics (the per-iteration scalars a run logs to TensorBoard) against frames, for several runs.

    python -m rl2_lightning.evaluation.scalars --export runs/<exp>/<run>/tb [<resumed run>/tb ...] --out stats.csv
    python -m rl2_lightning.evaluation.scalars --compare "A=stats.csv" "B=runs/<exp>/<run>/tb" \\
        --tags train/explained_variance train/entropy --out stats.png

``--export`` writes the scalars of one run (the TensorBoard folders of its stages, in order: a resumed run
writes into a new folder) to a small CSV with a ``frames`` column, which is what a run folder under ``data/``
keeps. ``--compare`` draws one panel per tag and one line per run; a run is such a CSV or a TensorBoard
folder. The step of every training scalar is the run's frame count (``time/frames``).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from rl2_lightning.evaluation.curves import parse_named_paths
from rl2_lightning.evaluation.report import _pyplot, save_figure

#: what ``--export`` keeps by default: how the critic fits, how the policy moves, and what it scores
DEFAULT_TAGS = (
    "train/trial_return", "train/explained_variance", "train/explained_variance_returns", "train/entropy",
    "train/approx_kl",
    "train/clip_fraction", "train/grad_norm", "train/grad_norm_actor", "train/grad_norm_critic", "loss/critic",
    "time/fps",
)


def _tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not folder.is_dir() or not any(folder.rglob("events.out.tfevents.*")):
        raise SystemExit(f"error: {folder} holds no TensorBoard event files (a run writes them under <run>/tb)")
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return {tag: {int(e.step): float(e.value) for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def read_scalars(path: Path | list[Path]) -> dict[str, dict[int, float]]:
    """Tag -> {frames: value} of a CSV written by :func:`export`, or of TensorBoard folders (a later
    folder's point at the same frame count replaces an earlier one's, as a resumed run replays it)."""
    paths = [Path(p) for p in (path if isinstance(path, list) else [path])]
    merged: dict[str, dict[int, float]] = {}
    for p in paths:
        if p.suffix == ".csv":
            if not p.is_file():
                raise SystemExit(f"error: {p} does not exist")
            with open(p, newline="") as f:
                rows = list(csv.DictReader(f))
            if not rows or "frames" not in rows[0]:
                raise SystemExit(f"error: {p} has no rows with a frames column")
            scalars = {tag: {int(float(r["frames"])): float(r[tag]) for r in rows if r[tag] != ""}
                       for tag in rows[0] if tag != "frames"}
        else:
            scalars = _tensorboard_scalars(p)
        for tag, points in scalars.items():
            merged.setdefault(tag, {}).update(points)
    return merged


def export(folders: list[Path], out: Path, tags: tuple[str, ...] | None = None) -> int:
    """Write ``tags`` of the TensorBoard ``folders`` (one run's stages) to ``out``; returns the rows written.
    By default: those of :data:`DEFAULT_TAGS` the run logged (the gradient norms depend on ``algo.grad_clip``)."""
    scalars = read_scalars(list(folders))
    tags = tags or tuple(t for t in DEFAULT_TAGS if t in scalars)
    missing = [t for t in tags if t not in scalars]
    if missing:
        raise SystemExit(f"error: no scalar {missing[0]} in {', '.join(map(str, folders))}; it has {', '.join(sorted(scalars))}")
    frames = sorted(set().union(*(scalars[t] for t in tags)))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frames", *tags])
        for n in frames:
            writer.writerow([n, *(f"{scalars[t][n]:.6g}" if n in scalars[t] else "" for t in tags)])
    return len(frames)


def compare_figure(runs: dict[str, dict[str, dict[int, float]]], tags: list[str], title: str = ""):
    """One panel per tag, one line per run, against training frames."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(tags), figsize=(4.6 * len(tags), 3.8), squeeze=False)
    for ax, tag in zip(axes[0], tags):
        for name, scalars in runs.items():
            points = sorted(scalars.get(tag, {}).items())
            if points:
                ax.plot([n / 1e6 for n, _ in points], [v for _, v in points], lw=1.2, label=name)
        ax.set_title(tag, fontsize=10)
        ax.set_xlabel("training frames (millions)")
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--export", nargs="+", type=Path, metavar="TB_DIR", help="one run's TensorBoard folders, in order")
    mode.add_argument("--compare", nargs="+", metavar="NAME=PATH", help="runs: an exported CSV or a TensorBoard folder")
    parser.add_argument("--tags", nargs="+", default=None, help="scalars to keep or draw")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    if args.export:
        rows = export(args.export, args.out, tuple(args.tags or ()))
        print(f"wrote {args.out} ({rows} iterations)")
        return
    runs = {name: read_scalars(path) for name, path in parse_named_paths(args.compare, "PATH").items()}
    tags = args.tags or ["train/explained_variance", "train/entropy", "train/trial_return"]
    for tag in tags:
        if not any(tag in s for s in runs.values()):
            raise SystemExit(f"error: no run has the scalar {tag}")
    save_figure(compare_figure(runs, tags, args.title), args.out)


if __name__ == "__main__":
    main()
