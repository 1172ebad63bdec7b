"""Learning curves from a run's ``metatest.csv``: a meta-test column per episode index against frames.

    python -m rl2_lightning.evaluation.curves <run>/metatest.csv --out curve.png [--metric success]
        [--reference "random (held-out)=0.071,0.068"] [--title maze_5x5]

``--metric success`` plots ``success_ep<k>`` (mazes, in %), ``--metric return`` plots ``return_ep<k>``;
``--reference NAME=v1,v2,...`` draws one dashed level per episode index for a baseline measured elsewhere.

    python -m rl2_lightning.evaluation.curves --compare "authors=<run>/metatest.csv" "ours=<run>/metatest.csv"
        --reference "Greedy=137.1" --out compare.png [--title tabular_n10]

``--compare`` draws several runs' trial return against training frames and against training minutes
(``train_s``: meta-tests left out), and prints each run's last level and its slope per million frames over
its last quarter, with the frames that slope would need to reach each reference.

    python -m rl2_lightning.evaluation.curves --within-trial "authors=<run>/metatest.csv"
        "Greedy=<evaluate out>/tabular_n10_per_episode.csv#Greedy" --out within.png [--title tabular_n10]

``--within-trial`` draws mean reward per episode index within the trial: a run's last meta-test
(``metatest.csv``), or a method of an evaluation (``<setting>_per_episode.csv#<method>``); it prints each
curve's total, its first three episodes, and its least-squares slope per episode from the fourth episode on
(how much it still improves once it has explored).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from rl2_lightning.evaluation.report import _pyplot, save_figure
from rl2_lightning.evaluation.scoring import late_slope, least_squares_slope


def _rows(path: Path) -> list[dict]:
    """The rows of a ``metatest.csv`` (one-line error when it is missing or empty)."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist (a run writes metatest.csv in its directory)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"error: {path} has no meta-test rows yet")
    return rows


def read_curve(path: Path, metric: str) -> tuple[list[float], list[list[float]]]:
    """Frames and, per episode index, the metric's values of every meta-test row."""
    rows = _rows(path)
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


def read_trial_curve(path: Path) -> tuple[list[float], list[float], list[float]]:
    """Frames, training minutes and trial return of every meta-test row of a ``metatest.csv``."""
    rows = _rows(path)
    if "trial_return" not in rows[0]:
        raise SystemExit(f"error: {path} has no trial_return column")
    return ([float(r["frames"]) for r in rows], [float(r["train_s"]) / 60 for r in rows],
            [float(r["trial_return"]) for r in rows])


def tail_slope(frames: list[float], values: list[float], share: float = 0.25) -> float:
    """Least-squares slope of ``values`` per million frames over the last ``share`` of the frames
    (at least the last two points)."""
    start = frames[-1] - share * (frames[-1] - frames[0])
    pts = [(f / 1e6, v) for f, v in zip(frames, values) if f >= start]
    pts = pts if len(pts) >= 2 else [(f / 1e6, v) for f, v in zip(frames[-2:], values[-2:])]
    return least_squares_slope(pts)


def _reach_text(frames: float) -> str:
    if frames == 0:
        return "already reached"
    return "never (the line does not rise)" if math.isinf(frames) else f"in {frames / 1e6:,.0f}M more frames"


def frames_to_reach(level: float, last: float, slope: float) -> float:
    """Frames more that a straight line at ``slope`` (per million frames) from ``last`` needs to reach
    ``level``: 0 when already there, infinity when the line does not rise."""
    if last >= level:
        return 0.0
    return (level - last) / slope * 1e6 if slope > 0 else float("inf")


def compare_figure(curves: dict[str, tuple], references: dict[str, list[float]], title: str):
    """Trial return of several runs (``read_trial_curve``'s triples) against frames (left) and training
    minutes (right)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for name, (frames, minutes, values) in curves.items():
        axes[0].plot([f / 1e6 for f in frames], values, marker=".", label=name)
        axes[1].plot(minutes, values, marker=".", label=name)
    for ax in axes:
        for name, levels in references.items():
            ax.axhline(levels[0], ls="--", lw=1, color="grey")
            ax.annotate(name, (ax.get_xlim()[0], levels[0]), fontsize=7, va="bottom")
    axes[0].set_xlabel("training frames (millions)")
    axes[1].set_xlabel("training minutes (meta-tests left out)")
    axes[0].set_ylabel("meta-test trial return")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def read_within_trial(source: str) -> list[float]:
    """Mean reward per episode index: the last row of a ``metatest.csv``, or ``<per_episode.csv>#<method>``
    (an evaluation's curve of one method)."""
    path, sep, method = source.partition("#")
    if not sep:
        rows = _rows(Path(path))
        columns = sorted((k for k in rows[-1] if k.startswith("return_ep")), key=lambda k: int(k[len("return_ep"):]))
        if not columns:
            raise SystemExit(f"error: {path} has no return_ep<k> columns (a metatest.csv, or give <per_episode.csv>#<method>)")
        return [float(rows[-1][c]) for c in columns]
    rows = [r for r in _rows(Path(path)) if method in (r.get("method"), r.get("key"))]
    if not rows:
        raise SystemExit(f"error: {path} has no method {method!r} (its methods: "
                         f"{', '.join(dict.fromkeys(r.get('method', '?') for r in _rows(Path(path))))})")
    return [float(r["mean"]) for r in sorted(rows, key=lambda r: int(r["episode"]))]


def within_trial(args) -> None:
    """``--within-trial``: the figure, and per curve its total, first three episodes and late slope."""
    sources = parse_named_paths(args.within_trial, "metatest.csv or NAME=per_episode.csv#METHOD", "--within-trial")
    curves = {name: read_within_trial(str(source)) for name, source in sources.items()}
    for name, values in curves.items():
        print(f"{name}: total {sum(values):.1f}; episodes 1-3 {sum(values[:3]):.1f}; from episode 4 on "
              f"{sum(values[3:]):.1f}, slope {late_slope(values):+.3f} per episode; last episode {values[-1]:.2f}")
    from rl2_lightning.evaluation.ablations import variants_figure

    save_figure(variants_figure(curves, args.title, ylabel="mean reward in the episode"), args.out)


def parse_reference(text: str) -> tuple[str, list[float]]:
    """``"name=v1,v2"`` -> ``("name", [v1, v2])``."""
    name, sep, values = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return name, [float(v) for v in values.split(",")]
    except ValueError:
        raise SystemExit(f"error: --reference {text!r} is not NAME=v1,v2,...") from None


def parse_named_paths(items: list[str], what: str, option: str = "--compare") -> dict[str, Path]:
    """``option``'s ``NAME=PATH`` items -> ``{name: path}`` (one-line error on an item without ``=``)."""
    runs = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"error: {option} {item!r} is not NAME={what}")
        runs[name] = Path(path)
    return runs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, nargs="?")
    parser.add_argument("--compare", nargs="+", metavar="NAME=CSV", help="several runs' trial return, by frames and minutes")
    parser.add_argument("--within-trial", nargs="+", metavar="NAME=CSV[#METHOD]",
                        help="reward per episode index: runs' last meta-tests or an evaluation's methods")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metric", default="success", choices=["success", "return"])
    parser.add_argument("--reference", action="append", default=[])
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(args)
    if args.within_trial:
        return within_trial(args)
    if args.csv is None:
        parser.error("give a metatest.csv, or --compare NAME=CSV ...")
    frames, per_episode = read_curve(args.csv, args.metric)
    references = dict(parse_reference(r) for r in args.reference)
    fig = curve_figure(frames, per_episode, args.metric, args.title or args.csv.parent.name, references)
    save_figure(fig, args.out)


def compare(args) -> None:
    """``--compare``: the figure, and per run its last level, tail slope and frames to each reference."""
    runs = parse_named_paths(args.compare, "CSV")
    references = dict(parse_reference(r) for r in args.reference)
    curves = {name: read_trial_curve(path) for name, path in runs.items()}
    for name, (frames, minutes, values) in curves.items():
        slope = tail_slope(frames, values)
        reach = ", ".join(f"{ref} ({levels[0]:g}) " + _reach_text(frames_to_reach(levels[0], values[-1], slope))
                          for ref, levels in references.items())
        print(f"{name}: {values[-1]:.2f} after {frames[-1] / 1e6:.1f}M frames, {minutes[-1]:.0f} training minutes; "
              f"slope {slope:+.3f} per 1M frames over the last quarter" + (f"; at that slope: {reach}" if reach else ""))
    fig = compare_figure(curves, references, args.title)
    save_figure(fig, args.out)


if __name__ == "__main__":
    main()
