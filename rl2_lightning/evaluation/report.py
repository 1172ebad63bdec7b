"""Reporting: the paper-style tables (Markdown), one CSV row per method, and the per-episode figure.

Two kinds of table, chosen by what the rows hold: *returns* (Tables 1 and 2: mean total reward over
the trial with its 95% interval, the paper's number beside ours, the best method marked) and
*navigation* (Table 3: success rate and successful-episode length per episode index, %improved).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch

from rl2_lightning.evaluation.paper import PAPER_TABLE3

RETURN_COLUMNS = ("key", "method", "mean", "ci95", "paper", "vs_paper", "best", "seconds")


def fmt_cell(mean: float, ci: float) -> str:
    """``78.3 ± 1.2`` with precision matched to the interval."""
    digits = 1 if ci >= 0.3 else 2
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def vs_paper(mean: float, ci: float, paper: float | None) -> str:
    """``within`` (the paper's number lies in our 95% interval), ``above``, ``below``, or ``""``."""
    if paper is None:
        return ""
    return "within" if abs(mean - paper) <= ci else ("above" if mean > paper else "below")


def is_navigation(rows: list[dict]) -> bool:
    """Whether the rows carry Table 3's columns (mazes)."""
    return bool(rows) and "success_ep0" in rows[0]


def returns_table(rows: list[dict]) -> str:
    """Tables 1/2: method, ours (95% CI), paper, comparison, time; the best method in bold."""
    lines = ["| method | ours (95% CI) | paper | ours vs paper | time (s) |", "|---|---|---|---|---|"]
    for r in rows:
        cell = fmt_cell(r["mean"], r["ci95"])
        name = f"**{r['method']}**" if r["best"] else r["method"]
        cell = f"**{cell}**" if r["best"] else cell
        paper = "" if r["paper"] is None else f"{r['paper']}"
        lines.append(f"| {name} | {cell} | {paper} | {r['vs_paper']} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def _fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def navigation_table(rows: list[dict], size: int, n: int, num_tasks: int) -> str:
    """Table 3: per episode, success rate and successful length; %improved; the paper's RL² row."""
    paper = PAPER_TABLE3.get(size)
    head = ["method", "trial return"]
    head += [f"success ep {k + 1}" for k in range(n)] + [f"length ep {k + 1}" for k in range(n)] + ["%improved"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], f"{r['mean']:.2f} ± {r['ci95']:.2f}"]
        cells += [f"{100 * r[f'success_ep{k}']:.1f}%" for k in range(n)]
        cells += [f"{_fmt(r[f'length_ep{k}'])} ± {_fmt(r[f'length_se_ep{k}'])}" for k in range(n)]
        cells.append(f"{100 * r['improved']:.1f}%" if "improved" in r else "–")
        lines.append("| " + " | ".join(cells) + " |")
    if paper is not None:
        k_max = min(n, len(paper["success"]))
        cells = ["RL² (paper)", "–"]
        cells += [f"{100 * paper['success'][k]:.1f}%" for k in range(k_max)] + ["–"] * (n - k_max)
        cells += [f"{paper['length'][k]} ± {paper['length_se'][k]}" for k in range(k_max)] + ["–"] * (n - k_max)
        cells.append(f"{100 * paper['improved']:.1f}%")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"{num_tasks} held-out mazes ({size}x{size}), one trial each; length: steps of the successful episodes "
        "(mean ± standard error); %improved: trials whose 2nd episode reached the goal in no more steps than the 1st."
    )
    return "\n".join(lines)


def table(rows: list[dict], setting: str, *, size: int | None = None, num_tasks: int | None = None) -> str:
    """The setting's table, of the kind its rows call for."""
    if is_navigation(rows):
        return navigation_table(rows, size, len(rows[0]["per_episode"]), num_tasks)
    return returns_table(rows)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: Path) -> None:
    """Write ``fig`` to ``out`` (its folder made if missing) and say so."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    _pyplot().close(fig)
    print(f"wrote {out}")


def write_outputs(rows: list[dict], setting: str, out_dir: Path, table_text: str, size: int | None = None) -> None:
    """``<setting>.md`` (the table), ``.csv`` (one row per method), ``.png`` (per-episode curves) and
    ``<setting>_per_episode.csv`` (the curves' numbers: method, episode index, mean reward, 95% half-width)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{setting}.md").write_text(f"# {setting}\n\n{table_text}\n")
    navigation = is_navigation(rows)
    keys = [k for k in rows[0] if k != "per_episode"] if navigation else list(RETURN_COLUMNS)
    with open(out_dir / f"{setting}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with open(out_dir / f"{setting}_per_episode.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "method", "episode", "mean", "ci95"])
        for r in rows:
            half = r.get("per_episode_ci95") or [float("nan")] * len(r["per_episode"])
            writer.writerows([r["key"], r["method"], k, m, h] for k, (m, h) in enumerate(zip(r["per_episode"], half)))
    fig = navigation_figure(rows, setting, size) if navigation else returns_figure(rows, setting)
    fig.savefig(out_dir / f"{setting}.png", dpi=100)
    _pyplot().close(fig)


#: the meta-learned policies' keys (drawn bold, with their interval, in every figure)
LEARNED_POLICIES = ("rl2", "rl3")


def method_colours(keys: list[str]) -> dict[str, str]:
    """A colour per method, none repeated: the learned policies black and blue, the others from tab20."""
    from matplotlib.colors import to_rgb

    plt = _pyplot()
    fixed = {"rl2": "black", "rl3": "tab:blue"}
    palette = [c for c in plt.get_cmap("tab20").colors if tuple(c[:3]) != to_rgb("tab:blue")]
    others = [k for k in keys if k not in fixed]
    if len(others) > len(palette):
        palette += list(plt.get_cmap("tab20b").colors)
    return {**{k: fixed[k] for k in keys if k in fixed}, **dict(zip(others, palette))}


def returns_figure(rows: list[dict], setting: str):
    """Mean reward per episode index of every method (a running mean over long trials)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = method_colours([r["key"] for r in rows])
    for r in rows:
        y = torch.tensor(r["per_episode"])
        half = torch.tensor(r.get("per_episode_ci95") or [0.0] * len(y))
        if len(y) > 50:  # long trials: a running mean keeps the curves readable
            w = len(y) // 50
            y, half = (torch.nn.functional.avg_pool1d(v[None, None], w, 1, padding=0).flatten() for v in (y, half))
        x = torch.arange(len(y)) + (len(r["per_episode"]) - len(y)) / 2
        learned = r["key"] in LEARNED_POLICIES  # drawn as the meta-test figure draws RL²: bold, with its interval
        ax.plot(x.numpy(), y.numpy(), label=r["method"], color=colours[r["key"]], lw=2.4 if learned else 1.0,
                linestyle="-" if learned else "--", zorder=3 if learned else 2)
        if learned:
            ax.fill_between(x.numpy(), (y - half).numpy(), (y + half).numpy(), color=colours[r["key"]], alpha=0.2)
    ax.set_xlabel("episode index within the trial")
    ax.set_ylabel("mean reward per episode (held-out tasks)")
    ax.set_title(setting)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def navigation_figure(rows: list[dict], setting: str, size: int | None):
    """Success rate and successful-episode length per episode index, each policy and the paper."""
    plt = _pyplot()
    n = len(rows[0]["per_episode"])
    x = list(range(1, n + 1))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for r in rows:
        a1.plot(x, [100 * r[f"success_ep{k}"] for k in range(n)], marker="o", label=r["method"])
        a2.errorbar(
            x, [r[f"length_ep{k}"] for k in range(n)], yerr=[r[f"length_se_ep{k}"] for k in range(n)],
            marker="o", capsize=3, label=r["method"],
        )
    paper = PAPER_TABLE3.get(size)
    if paper is not None:
        k_max = min(n, len(paper["success"]))
        a1.plot(x[:k_max], [100 * s for s in paper["success"][:k_max]], "k--", lw=1, label="RL² (paper)")
        a2.errorbar(x[:k_max], paper["length"][:k_max], yerr=paper["length_se"][:k_max], fmt="k--", lw=1,
                    capsize=3, label="RL² (paper)")
    a1.set(xlabel="episode within the trial", ylabel="success rate (%)", ylim=(0, 105), xticks=x)
    a2.set(xlabel="episode within the trial", ylabel="steps of successful episodes", xticks=x)
    a1.legend(fontsize="small")
    fig.suptitle(f"{setting}: held-out mazes")
    fig.tight_layout()
    return fig


def per_episode_figure(returns: torch.Tensor, baselines: dict[str, torch.Tensor], title: str):
    """The meta-test's figure: RL²'s mean return per episode index (95% CI band), baselines dashed."""
    from rl2_lightning.baselines.registry import display_name

    plt = _pyplot()
    r = returns.double().cpu()
    mean = r.mean(0)
    half = 1.96 * r.std(0) / max(1, r.shape[0]) ** 0.5
    x = torch.arange(1, r.shape[1] + 1)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(x, mean, marker="o", label="RL²")
    ax.fill_between(x, mean - half, mean + half, alpha=0.25)
    for key, curve in (baselines or {}).items():
        ax.plot(x, curve, linestyle="--", linewidth=1, label=display_name(key))
    ax.set_xlabel("episode within the trial")
    ax.set_ylabel("mean return")
    ax.set_title(title)
    ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    return fig
