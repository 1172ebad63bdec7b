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
(:mod:`rl2_lightning.checkpoints`): a file that does not match is refused in one line and never run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "data" / "pretrained"
MANIFEST = PRETRAINED_DIR / "manifest.json"


def weights_checksum(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def read_manifest(directory: Path = PRETRAINED_DIR) -> dict[str, Any]:
    """``{preset: {"file", "sha256", "setting", "frames", "note"}}`` (empty when nothing is shipped)."""
    path = directory / MANIFEST.name
    return json.loads(path.read_text()) if path.exists() else {}


def export(
    ckpt: Path, preset: str, note: str = "", out_dir: Path = PRETRAINED_DIR, seconds: float | None = None,
    warm_start: str | None = None,
) -> Path:
    """Write the compact file of a training checkpoint for ``preset`` and record it in the manifest, with
    the training's wall-clock ``seconds`` (all stages, warm starts included) and what it was warm-started from."""
    from rl2_lightning.checkpoints import build_module, load_networks, read_checkpoint

    source = read_checkpoint(Path(ckpt), arg="export")
    module = build_module(source["hyper_parameters"], f"export {ckpt}")
    load_networks(module, source["state_dict"], f"export {ckpt}")
    state = {k: v for k, v in module.state_dict().items() if k.startswith(("actor.", "critic."))}
    spec = module.env.spec_env()
    setting = spec.simulator.setting(module.env.episodes_per_trial)
    spec.close()
    hparams = {k: module.hparams[k] for k in ("env", "model", "algo", "optimizer")}
    record = {
        "preset": preset, "setting": setting, "hyper_parameters": hparams, "state_dict": state,
        "frames": int(module.frames), "sha256": weights_checksum(state), "note": note,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{preset}.pt"
    torch.save(record, path)
    manifest = read_manifest() if out_dir == PRETRAINED_DIR else {}
    entry = {"file": path.name, "sha256": record["sha256"], "file_sha256": file_sha256(path), "setting": setting,
             "frames": record["frames"], "note": note}
    if seconds is not None:
        entry["train_seconds"] = float(seconds)
    if warm_start:
        entry["warm_start"] = warm_start
    if manifest.get(preset, {}).get("sha256") == entry["sha256"]:  # the same weights: keep their recorded score
        entry = {**manifest[preset], **entry}
    manifest[preset] = entry
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_record(preset: str, directory: Path = PRETRAINED_DIR) -> dict[str, Any]:
    """The shipped record of ``preset``: its bytes checked against the manifest before anything is parsed,
    then loaded with ``weights_only=True``, its weights checked against their own checksum."""
    from rl2_lightning.checkpoints import load_bytes

    manifest = read_manifest(directory)
    if preset not in manifest:
        have = ", ".join(sorted(manifest)) or "none"
        raise FileNotFoundError(f"ckpt=pretrained: no shipped policy for {preset} (shipped: {have})")
    entry = manifest[preset]
    path = directory / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"ckpt=pretrained: {path} is missing")
    data = path.read_bytes()
    if "file_sha256" not in entry or hashlib.sha256(data).hexdigest() != entry["file_sha256"]:
        raise ValueError(f"ckpt=pretrained: {path} does not match its checksum in {directory / 'manifest.json'}; refused unread")
    record = load_bytes(data, f"ckpt=pretrained: {path}")
    if not isinstance(record, dict) or "state_dict" not in record or "hyper_parameters" not in record:
        raise ValueError(f"ckpt=pretrained: {path} is not a shipped policy")
    digest = weights_checksum(record["state_dict"])
    if digest != record.get("sha256") or digest != entry["sha256"]:
        raise ValueError(f"ckpt=pretrained: {path} does not match its checksum in {directory / 'manifest.json'}")
    return record


def load(preset: str, directory: Path = PRETRAINED_DIR):
    """The shipped RL² module of ``preset`` (:func:`read_record`; one-line errors for a preset without a
    shipped policy, a file that does not match, or a stored config naming a foreign ``_target_``)."""
    from rl2_lightning.checkpoints import build_module, load_networks

    record = read_record(preset, directory)
    path = directory / read_manifest(directory)[preset]["file"]
    module = build_module(record["hyper_parameters"], f"ckpt=pretrained: {path}")
    load_networks(module, record["state_dict"], f"ckpt=pretrained: {path}")
    module.frames.fill_(record["frames"])
    module.pretrained = record
    return module.eval()


def score(preset: str, num_tasks: int | None = None, seed: int = 0) -> dict[str, float]:
    """The shipped policy's held-out score (RL² alone, the evaluation's seeds), as the manifest records it."""
    from rl2_lightning.config import compose
    from hydra.utils import instantiate

    from rl2_lightning.evaluation import evaluate

    module = load(preset)
    cfg = compose([f"conf={preset}"])
    rows = evaluate(instantiate(cfg.env), {"rl2": module.actor}, agent=module.agent, baselines=False,
                    num_tasks=num_tasks, seed=seed, verbose=False)
    return {"mean": rows[0]["mean"], "ci95": rows[0]["ci95"], "num_tasks": num_tasks or 1000, "seed": seed}


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
    sc = sub.add_parser("score", help="score a shipped policy on the held-out set and record it in the manifest")
    sc.add_argument("preset")
    sub.add_parser("list", help="the shipped policies")
    args = parser.parse_args(argv)
    if args.command == "export":
        path = export(args.checkpoint, args.preset, args.note, seconds=args.seconds, warm_start=args.warm_start)
        print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")
    elif args.command == "score":
        torch.set_num_threads(1)
        manifest = read_manifest()
        manifest[args.preset]["heldout"] = result = score(args.preset)
        MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        print(f"{args.preset}: {result['mean']:.3f} ± {result['ci95']:.3f} on {result['num_tasks']} held-out tasks")
    else:
        for preset, entry in sorted(read_manifest().items()):
            print(f"{preset}: {entry['setting']}, {entry['frames']:,} frames, sha256 {entry['sha256'][:12]}  {entry['note']}")


if __name__ == "__main__":
    from rl2_lightning.errors import one_line_errors

    with one_line_errors():
        main()
