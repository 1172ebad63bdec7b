"""Learning curves from a run's ``metatest.csv``: a meta-test column per episode index against frames.

    python -m rl2_lightning.evaluation.curves <run>/metatest.csv --out curve.png [--metric success]
        [--reference "random (held-out)=0.071,0.068"] [--title maze_5x5]

``--metric success`` plots ``success_ep<k>`` (mazes, in %), ``--metric return`` plots ``return_ep<k>``;
``--reference NAME=v1,v2,...`` draws one dashed level per episode index for a baseline measured elsewhere.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from rl2_lightning.evaluation.report import _pyplot


def read_curve(path: Path, metric: str) -> tuple[list[float], list[list[float]]]:
    """Frames and, per episode index, the metric's values of every meta-test row."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist (a run writes metatest.csv in its directory)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"error: {path} has no meta-test rows yet")
    prefix = f"{metric}_ep"
    columns = sorted((k for k in rows[0] if k.startswith(prefix)), key=lambda k: int(k[len(prefix):]))
    if not columns:
        raise SystemExit(f"error: {path} has no {prefix}<k> columns; its columns: {', '.join(rows[0])}")
    frames = [float(r["frames"]) for r in rows]
    return frames, [[float(r[c]) for r in rows] for c in columns]


def curve_figure(frames, per_episode, metric: str, title: str, references: dict[str, list[float]] | None = None):
    """One line per episode index against frames; dashed levels for the references."""
    plt = _pyplot()
    scale = 100.0 if metric == "success" else 1.0
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, values in enumerate(per_episode):
        ax.plot(frames, [scale * v for v in values], marker="o", ms=3, color=colors[k % len(colors)], label=f"episode {k + 1}")
    for name, levels in (references or {}).items():
        for k, level in enumerate(levels):
            ax.axhline(scale * level, ls="--", lw=1, color=colors[k % len(colors)], label=f"{name}, episode {k + 1}")
    ax.set_xlabel("training frames")
    ax.set_ylabel("success rate (%)" if metric == "success" else "mean return")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def parse_reference(text: str) -> tuple[str, list[float]]:
    """``"name=v1,v2"`` -> ``("name", [v1, v2])``."""
    name, sep, values = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return name, [float(v) for v in values.split(",")]
    except ValueError:
        raise SystemExit(f"error: --reference {text!r} is not NAME=v1,v2,...") from None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metric", default="success", choices=["success", "return"])
    parser.add_argument("--reference", action="append", default=[])
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    frames, per_episode = read_curve(args.csv, args.metric)
    references = dict(parse_reference(r) for r in args.reference)
    fig = curve_figure(frames, per_episode, args.metric, args.title or args.csv.parent.name, references)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
