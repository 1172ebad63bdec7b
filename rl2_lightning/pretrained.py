"""Shipped policies: compact checkpoints of trained agents, loadable by preset name (``ckpt=pretrained``).

    python -m rl2_lightning.pretrained export data/training/bandit_k10_n10/last.ckpt bandit_k10_n10 \\
        --note "bandit recipe, 12 min on the project CPU"
    python -m rl2_lightning.evaluate conf=bandit_k10_n10 ckpt=pretrained

A shipped file, ``data/pretrained/<preset>.pt``, holds what rebuilds and identifies the agent and nothing
for training, as tensors and plain data only: the config nodes of env, model and algorithm (today's
``_target_`` layout, whatever layout the source checkpoint had), the actor's and critic's weights, the
frames trained, the setting's name and a SHA-256 of the weights. ``data/pretrained/manifest.json`` records
every file's SHA-256 over its bytes (so over the stored config as well as the weights), setting and
provenance. Loading checks the bytes against the manifest *before* parsing anything, then unpickles with
``weights_only=True`` and instantiates only the project's own ``_target_``s
(:mod:`rl2_lightning.checkpoints`, which holds the file format): a file that does not match is refused in
one line and never run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rl2_lightning.checkpoints import (  # noqa: F401 - the model zoo's names
    MANIFEST,
    PRETRAINED_DIR,
    export_policy as export,
    file_sha256,
    load_pretrained as load,
    read_manifest,
    read_record,
    update_manifest,
    weights_checksum,
)
from rl2_lightning.resources import data_dir


def score(preset: str, num_tasks: int | None = None, seed: int = 0) -> dict[str, float]:
    """The shipped policy's held-out score (RL² alone, the evaluation's seeds), as the manifest records it."""
    from rl2_lightning.evaluation import evaluate, policy_key

    module = load(preset)
    env = module.env  # the setting exactly as trained (a preset plus a recipe, for the maze)
    own_pools = env.simulator_class.own_pools
    rows = evaluate(env, {policy_key(env): module.actor}, agent=module.agent, baselines=False, num_tasks=num_tasks,
                    seed=seed, verbose=False, batch_size=8 if own_pools else None)
    if num_tasks is None:
        from rl2_lightning.envs.maze.layout import POOL_SIZE
        from rl2_lightning.envs.tasks import TASK_SET_SIZE

        num_tasks = POOL_SIZE if own_pools else TASK_SET_SIZE
    return {"mean": rows[0]["mean"], "ci95": rows[0]["ci95"], "num_tasks": num_tasks, "seed": seed}


def best_baselines(path: Path | None = None) -> dict[str, str]:
    """Per setting, the best classical baseline on the held-out set, as ``"Gittins 441.0 ± 3.0"`` (from
    ``data/baselines/heldout.json``, written by ``python -m rl2_lightning.baselines.results``)."""
    path = path or data_dir() / "baselines" / "heldout.json"
    if not path.exists():
        return {}
    out = {}
    for setting, rows in json.loads(path.read_text()).items():
        rivals = [r for key, r in rows.items() if key not in ("rl2", "rl3", "random")]
        if rivals:
            best = max(rivals, key=lambda r: r["mean"])
            out[setting] = f"{best['method']} {best['mean']:.1f} ± {best['ci95']:.1f}"
    return out


def zoo_table(manifest: dict[str, dict], provenance: bool = False) -> str:
    """The model zoo as a Markdown table: per shipped policy its setting, variant (RL² or RL³), held-out
    score ± 95% CI (as ``score`` recorded it), the paper's RL², frames and CPU-hours (warm starts
    included); with ``provenance``, its warm start, note and checksums."""
    from rl2_lightning.evaluation.paper import PAPER_RESULTS

    head = ["preset", "setting", "variant", "held-out (1000 tasks)", "paper's RL²", "best baseline (held-out)",
            "frames", "CPU-hours"]
    baselines = best_baselines()
    if provenance:
        head += ["warm start", "note", "sha256 (file)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for preset, entry in sorted(manifest.items(), key=lambda kv: (kv[1]["setting"], kv[0])):
        held = entry.get("heldout")
        seconds = entry.get("train_seconds")
        cells = [
            preset, entry["setting"], "RL³" if preset.endswith("_rl3") else "RL²",
            f"{held['mean']:.2f} ± {held['ci95']:.2f}" if held else "not scored",
            str(PAPER_RESULTS.get(entry["setting"], {}).get("rl2", "–")), baselines.get(entry["setting"], "–"),
            f"{entry['frames'] / 1e6:.1f}M", f"{seconds / 3600:.2f}" if seconds else "?",
        ]
        if provenance:
            cells += [entry.get("warm_start", "–"), entry.get("note", ""), entry.get("file_sha256", "")[:16]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``export <checkpoint> <preset> [--note TEXT]``, ``score <preset>`` or ``list``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="write data/pretrained/<preset>.pt from a training checkpoint")
    ex.add_argument("checkpoint", type=Path)
    ex.add_argument("preset")
    ex.add_argument("--note", default="")
    ex.add_argument("--seconds", type=float, default=None, help="wall-clock seconds the training took, all stages")
    ex.add_argument("--warm-start", default=None, help="what the first stage was warm-started from (init_from)")
    ex.add_argument("--run", default=None, help="the folder of data/training/ holding the run (default: the preset's)")
    sc = sub.add_parser("score", help="score a shipped policy on the held-out set and record it in the manifest")
    sc.add_argument("preset")
    ls = sub.add_parser("list", help="the shipped policies: held-out score, the paper's RL², cost")
    ls.add_argument("--provenance", action="store_true", help="also how each was trained, and its checksums")
    args = parser.parse_args(argv)
    if args.command == "export":
        path = export(args.checkpoint, args.preset, args.note, seconds=args.seconds, warm_start=args.warm_start,
                      training_run=args.run)
        print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")
    elif args.command == "score":
        torch.set_num_threads(1)
        if args.preset not in read_manifest():
            raise ValueError(f"{args.preset} is not shipped (export it first); shipped: {', '.join(sorted(read_manifest()))}")
        result = score(args.preset)  # minutes for a maze: the manifest is read again only to record it
        update_manifest(lambda manifest: manifest[args.preset].update(heldout=result))
        print(f"{args.preset}: {result['mean']:.3f} ± {result['ci95']:.3f} on {result['num_tasks']} held-out tasks")
    else:
        print(zoo_table(read_manifest(), args.provenance))


if __name__ == "__main__":
    from rl2_lightning.errors import one_line_errors

    with one_line_errors():
        main()
