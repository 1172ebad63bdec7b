"""Learned objectives on disk: a run's files, and the shipped ones that load by name.

A file is a plain dict (tensors, numbers, strings) read with ``weights_only=True``, so loading it runs
no code: ``{"state_dict", "hidden_size", "split", "meta_optimizer", "iterations", "frames", "seconds",
"tuning"}``. A run's files get a ``.sha256`` sidecar; shipped files (``data/pretrained/objectives/``)
are checked against their manifest before anything is parsed.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from rl2_lightning.checkpoints import (
    PRETRAINED_DIR, checksum_path, file_sha256, load_bytes, read_manifest, read_verified, sha256_of,
    update_manifest, weights_checksum, write_atomically,
)
from rl2_lightning.metagenrl.objective import LearnedObjective

SHIPPED_DIR = PRETRAINED_DIR / "objectives"
KEYS = ("state_dict", "hidden_size")


def save_objective(path: Path, objective: LearnedObjective, **info: Any) -> None:
    """Write ``objective`` (and ``info``: numbers and strings) atomically, with its checksum sidecar."""
    record = {"state_dict": {k: v.detach().clone() for k, v in objective.state_dict().items()},
              "hidden_size": objective.hidden_size, **info}
    buffer = io.BytesIO()
    torch.save(record, buffer)
    data = buffer.getvalue()
    write_atomically(path, data)
    write_atomically(checksum_path(path), (sha256_of(data) + "\n").encode())


def _build(record: Any, what: str) -> LearnedObjective:
    if not isinstance(record, dict) or not all(k in record for k in KEYS):
        raise ValueError(f"{what} is not a learned objective of this project (no state_dict and hidden_size)")
    objective = LearnedObjective(record["hidden_size"])
    try:
        objective.load_state_dict(record["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{what} does not fit the learned objective ({str(err).splitlines()[0][:120]})") from None
    objective.record = {k: v for k, v in record.items() if k != "state_dict"}
    return frozen(objective)


def frozen(objective: torch.nn.Module) -> torch.nn.Module:
    """``objective`` with every parameter excluded from autograd (meta-test: the learner trains, L_α does not)."""
    for p in objective.parameters():
        p.requires_grad_(False)
    return objective.eval()


def load_objective(path: str | Path, arg: str = "ckpt") -> LearnedObjective:
    """A run's objective file, checked against its sidecar and loaded safely, frozen."""
    what = f"{arg}={str(path)!r}"
    return _build(load_bytes(read_verified(Path(path), what), what), what)


def export_objective(path: str | Path, name: str, note: str = "", out_dir: Path = SHIPPED_DIR) -> Path:
    """Ship a run's objective file as ``<name>.pt`` in ``out_dir`` and record it in that folder's manifest."""
    objective = load_objective(path, "export")
    record = {"state_dict": objective.state_dict(), **objective.record, "note": note}
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.pt"
    torch.save(record, target)
    entry = {"file": target.name, "sha256": weights_checksum(record["state_dict"]), "file_sha256": file_sha256(target),
             "note": note, **{k: record[k] for k in ("split", "meta_optimizer", "iterations", "frames", "seconds")
                              if k in record}}
    update_manifest(lambda manifest: manifest.__setitem__(name, entry), out_dir)
    return target


def load_shipped(name: str, directory: Path = SHIPPED_DIR) -> LearnedObjective:
    """The shipped learned objective ``name``, its bytes checked against the manifest before parsing."""
    manifest = read_manifest(directory)
    if name not in manifest:
        raise FileNotFoundError(f"ckpt=pretrained: no shipped learned objective {name!r} "
                                f"(shipped: {', '.join(sorted(manifest)) or 'none'})")
    entry = manifest[name]
    path = directory / entry["file"]
    what = f"ckpt=pretrained: {path}"
    if not path.is_file():
        raise FileNotFoundError(f"{what} is missing")
    data = path.read_bytes()
    if sha256_of(data) != entry.get("file_sha256"):
        raise ValueError(f"{what} does not match its checksum in {directory / 'manifest.json'}; refused unread")
    objective = _build(load_bytes(data, what), what)
    if weights_checksum(objective.state_dict()) != entry["sha256"]:
        raise ValueError(f"{what} does not match its checksum in {directory / 'manifest.json'}")
    return objective
