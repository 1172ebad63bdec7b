"""Everything about checkpoint files: writing, verifying, reading safely, resuming, warm starts, rebuilding.

- **Writing** (:class:`AtomicCheckpointIO`): the bytes go to a hidden ``.partial`` file beside the target,
  are fsync'ed and renamed over it, and their SHA-256 is written beside it (``<name>.ckpt.sha256``). A
  write that fails for any reason (a kill, a full disk: torch raises ``RuntimeError`` there) leaves no
  partial file and the previous checkpoint as it was.
- **Verifying**: a checkpoint is *intact* when its bytes match its checksum file. ``ckpt_path=latest``
  (:func:`latest_checkpoint`) only hashes files; it never unpickles one it is merely inspecting.
- **Reading** (:func:`read_checkpoint`): the checksum first (when there is one), then ``torch.load`` with
  ``weights_only=True``: a file that holds anything but tensors and plain data is refused in one line
  naming the type, unless the user opts in with ``trust_checkpoint=true``.
- **Rebuilding** (:func:`build_module`): the ``_target_`` nodes stored in a checkpoint's hyperparameters
  are instantiated only if they name this project's components, ``torch.optim`` optimizers, ones the
  user registered (:func:`trust_targets`), or ones of the config the user composed for this run.
- **Resuming and warm starts**: the stored config is compared with the run's (:func:`check_trained_on`),
  and :func:`warm_start_weights` / :func:`apply_warm_start` carry weights into a fresh module.
- **Shipped policies** (``data/pretrained/<preset>.pt``, :func:`export_policy`, :func:`load_pretrained`):
  tensors and plain data only (the config nodes of env, model and algorithm, the actor's and critic's
  weights, the frames trained, the setting, a SHA-256 of the weights); ``manifest.json`` records every
  file's SHA-256 over its bytes, so over the stored config as well as the weights, and loading checks
  the bytes against it before parsing anything. :mod:`rl2_lightning.pretrained` is the model zoo's command.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig

from rl2_lightning.config import container
from rl2_lightning.runs import say
from rl2_lightning.resources import data_dir

#: what the one-line refusals tell a user who does trust a file
TRUST_HINT = "trust_checkpoint=true"

#: ``_target_`` prefixes a stored config may name (the project's own components)
_TRUSTED_PREFIXES: set[str] = {"rl2_lightning."}


def trust_targets(*prefixes: str) -> None:
    """Let checkpoints name ``_target_``s under these module prefixes (a user's own families, memories or
    algorithms: ``trust_targets("my_lab.envs.")``)."""
    _TRUSTED_PREFIXES.update(p if p.endswith(".") else p + "." for p in prefixes)


def sha256_of(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def checksum_path(path: Path) -> Path:
    """The checksum file written beside a checkpoint."""
    return path.with_name(path.name + ".sha256")


# ----------------------------------------------------------------------------------------- writing
class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, made atomic, checksummed, and safe to read.

    Lightning's default writes into a temporary file in ``$TMPDIR`` and moves it: across file systems
    the move is a copy, which a kill or a full disk cuts short. Here the bytes are written to
    ``.<name>.partial`` in the target's directory, flushed, fsync'ed and renamed over the target
    (``os.replace`` is atomic within a directory); the checksum file follows the same way. Loading (a
    resume) verifies the checksum and unpickles with ``weights_only=True`` unless ``trust``.
    """

    def __init__(self, trust: bool = False):
        super().__init__()
        self.trust = trust

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:  # noqa: D102
        path = Path(path)
        partial = path.with_name(f".{path.name}.partial")
        try:
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            data = buffer.getvalue()
            path.parent.mkdir(parents=True, exist_ok=True)
            # the big write first: if it fails (a full disk) neither the checkpoint nor its checksum changed
            _write_synced(partial, data)
            write_atomically(checksum_path(path), (sha256_of(data) + "\n").encode())
            os.replace(partial, path)
        except Exception as err:  # noqa: BLE001 - OSError, or RuntimeError from a full disk: same outcome
            partial.unlink(missing_ok=True)
            reason = getattr(err, "strerror", None) or (str(err).splitlines() or [type(err).__name__])[0]
            raise OSError(
                f"could not write checkpoint {path} ({reason}); the checkpoints already in {path.parent} are untouched"
            ) from None

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Verified against its checksum and unpickled safely (a resume's file was already checked to be
        this project's; Lightning also passes its own weights-only files, e.g. ``ddp_spawn``'s)."""
        what = f"ckpt_path={str(path)!r}"
        return load_bytes(read_verified(Path(path), what), what, self.trust)

    def remove_checkpoint(self, path) -> None:  # noqa: D102
        super().remove_checkpoint(path)
        checksum_path(Path(path)).unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a hidden partial file in the same directory, fsync'ed and renamed
    over it: the file is either the old one or the new one, never half of either."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        _write_synced(partial, data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------------------- reading
def load_bytes(data: bytes, what: str, trust: bool = False) -> Any:
    """Unpickle ``data`` with ``weights_only=True`` (``trust``: without the restriction); one-line
    ``ValueError`` naming ``what`` and the refused type otherwise."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as err:
        found = _refused_global(str(err))
        if found is None:
            raise ValueError(f"{what} is not a readable checkpoint (corrupt: {str(err).splitlines()[0][:120]})") from None
        raise ValueError(
            f"{what} holds {found}, which a checkpoint of this project never holds; refused without running it "
            f"({TRUST_HINT} loads it only if you trust the file)"
        ) from None
    except Exception as err:  # noqa: BLE001 - any failure means the file is unusable
        raise ValueError(f"{what} is not a readable checkpoint ({type(err).__name__})") from None


def _refused_global(message: str) -> str | None:
    """The type torch's safe unpickler refused, from its message (``GLOBAL posix.system`` ...)."""
    import re

    match = re.search(r"(?:GLOBAL|global) ([\w.]+)", message) or re.search(r"Unsupported (?:global|operand)[^:]*: ([^\s]+)", message)
    return match.group(1) if match else ("a callable (REDUCE)" if "REDUCE" in message or "reduce" in message else None)


def read_verified(path: Path, what: str) -> bytes:
    """The file's bytes, checked against its checksum file when it has one (one-line errors)."""
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such checkpoint file")
    data = path.read_bytes()
    sidecar = checksum_path(path)
    if sidecar.is_file() and sidecar.read_text().strip() != sha256_of(data):
        raise ValueError(f"{what} does not match its checksum ({sidecar.name}): the file is corrupt")
    return data


def read_checkpoint(path: Path, arg: str = "ckpt_path", trust: bool = False) -> dict[str, Any]:
    """A Lightning checkpoint of this project, loaded safely on the CPU; one-line errors for a missing,
    corrupt, untrusted or foreign file (a Lightning checkpoint of another project has no ``env``)."""
    what = f"{arg}={str(path)!r}"
    ckpt = load_bytes(read_verified(path, what), what, trust)
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or "state_dict" not in ckpt or not all(k in hparams for k in ("env", "model", "algo")):
        raise ValueError(f"{what} is not a checkpoint of this project (no env, model and algo in its hyper_parameters)")
    return ckpt


def is_intact(path: Path) -> bool:
    """Whether a checkpoint's bytes match the checksum written with it (without unpickling anything)."""
    sidecar = checksum_path(path)
    try:
        return sidecar.is_file() and sidecar.read_text().strip() == sha256_of(path.read_bytes())
    except OSError:
        return False


def latest_checkpoint(runs_dir: str | Path, experiment: str, own_dir: Path | None = None,
                      key: str = "ckpt_path", verb: str = "resuming") -> Path:
    """The newest intact checkpoint of the experiment, over all its runs (``last.ckpt`` and the epoch
    checkpoints beside it). Says which file it resumes, which newer files it passed over and why, and
    which newer runs hold none (``own_dir``, the directory made for this invocation, is not one of them);
    ``key`` and ``verb`` word those messages for the caller (``ckpt``, ``evaluating``)."""
    root = Path(runs_dir, experiment)
    found = sorted(root.glob("*/checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    chosen = next((p for p in found if is_intact(p)), None)
    if chosen is None:
        unverified = [p for p in found if not checksum_path(p).is_file()]
        hint = f"; {len(unverified)} file(s) have no checksum (written before checksums): resume one with ckpt_path=<file>" if unverified else ""
        raise FileNotFoundError(f"{key}=latest: no run of experiment {experiment!r} has an intact checkpoint under {root}{hint}")
    own = own_dir.resolve() if own_dir is not None else None
    newer = sorted(
        d.name for d in root.iterdir()
        if d.is_dir() and d != chosen.parent.parent and d.resolve() != own and d.stat().st_mtime > chosen.stat().st_mtime
        and not any(is_intact(p) for p in d.glob("checkpoints/*.ckpt"))
    )
    if newer:
        say(f"{key}=latest: skipping newer run(s) without an intact checkpoint: {', '.join(newer)}", logging.WARNING)
    passed = found[: found.index(chosen)]
    if passed:
        why = ", ".join(f"{p.parent.parent.name}/{p.name} ({'checksum mismatch' if checksum_path(p).is_file() else 'no checksum'})" for p in passed)
        say(f"{key}=latest: passing over newer file(s) that are not intact: {why}", logging.WARNING)
    say(f"{key}=latest: {verb} {chosen}")
    return chosen


# ----------------------------------------------------------------------------------------- rebuilding
def config_targets(node: Any) -> set[str]:
    """Every ``_target_`` string in a (nested) config."""
    if isinstance(node, DictConfig):
        node = container(node)
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                found.add(value)
            else:
                found |= config_targets(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            found |= config_targets(value)
    return found


def _is_optimizer(target: str) -> bool:
    module, _, name = target.rpartition(".")
    if module != "torch.optim":
        return False
    cls = getattr(torch.optim, name, None)
    return isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)


def check_targets(hparams: dict, what: str, allowed: Iterable[str] = ()) -> None:
    """Refuse, in one line, a stored ``_target_`` that is not the project's own, a ``torch.optim``
    optimizer, a registered prefix, or one of ``allowed`` (the targets of the config the user composed)."""
    allowed = set(allowed)
    for target in sorted(config_targets(hparams)):
        if target in allowed or _is_optimizer(target) or any(target.startswith(p) for p in _TRUSTED_PREFIXES):
            continue
        raise ValueError(
            f"{what} names _target_ {target!r}, which is not a component of rl2_lightning; refused without calling it "
            "(a component of your own: rl2_lightning.checkpoints.trust_targets('<module>.'), or name it in the config)"
        )


#: keys that say how a network runs, not what it computes: a checkpoint trained with one value loads, resumes and
#: warm-starts under another, and the loading config's value is the one used
EXECUTION_KEYS = ("model.memory.compile",)


def with_execution_keys(hparams: dict, cfg: DictConfig | None) -> dict:
    """``hparams`` with the :data:`EXECUTION_KEYS` that ``cfg`` sets taken from ``cfg`` (a copy; e.g. a checkpoint
    trained with ``model.memory.compile=true`` on a GPU, evaluated with ``model.memory.compile=false``)."""
    import copy

    from omegaconf import OmegaConf

    out = copy.deepcopy(hparams)
    for key in EXECUTION_KEYS if cfg is not None else ():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        value = OmegaConf.select(cfg, key, default=KeyError)
        if isinstance(node, dict) and value is not KeyError:
            node[leaf] = value
    return out


def build_module(hparams: dict, what: str, cfg: DictConfig | None = None, trust: bool = False):
    """An :class:`~rl2_lightning.module.RL2Module` from stored hyperparameters, after :func:`check_targets`
    (skipped only when the user trusts the file); the :data:`EXECUTION_KEYS` that ``cfg`` sets come from it."""
    from rl2_lightning.module import RL2Module

    if not trust:
        check_targets(hparams, what, config_targets(cfg) if cfg is not None else ())
    hparams = with_execution_keys(hparams, cfg)
    keys = ("env", "model", "algo", "optimizer", "max_epochs")
    return RL2Module(**{k: hparams[k] for k in keys if k in hparams})


def load_module(path: Path, cfg: DictConfig, arg: str = "ckpt", free_env_keys: tuple[str, ...] = (), trust: bool = False):
    """The RL² module of a training checkpoint, checked to be trained on ``cfg``'s setting (bar
    ``free_env_keys``), in eval mode; one-line errors otherwise."""
    what = f"{arg}={str(path)!r}"
    ckpt = read_checkpoint(path, arg, trust)
    check_trained_on(ckpt["hyper_parameters"], cfg, ("env",), what, free_env_keys)
    module = build_module(ckpt["hyper_parameters"], what, cfg, trust)
    load_networks(module, ckpt["state_dict"], what)
    return module.eval()


def load_networks(module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load the actor's and critic's weights (and the frame count) of ``state``; one line on a mismatch."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ValueError(f"{what} does not fit its own agent ({str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err})") from None
    networks = [k for k in missing if k.startswith(("actor.", "critic."))]
    if networks or unexpected:
        raise ValueError(f"{what} does not fit its own agent ({(networks or unexpected)[0]})")


# ----------------------------------------------------------------------------------------- resume and warm start
def check_checkpoint(
    path: Path, cfg: DictConfig, groups: tuple[str, ...] = ("model", "env"), arg: str = "ckpt_path"
) -> None:
    """Fail early, in one line, on a missing, corrupt, untrusted or incompatible checkpoint file (its
    ``groups`` must match the config's, bar the batch layout)."""
    ckpt = read_checkpoint(path, arg, trust=bool(cfg.get("trust_checkpoint", False)))
    check_trained_on(ckpt["hyper_parameters"], cfg, groups, f"{arg}={str(path)!r}")


def check_trained_on(
    hparams: dict, cfg: DictConfig, groups: tuple[str, ...], what: str, free_env_keys: tuple[str, ...] = ()
) -> None:
    """Raise ``ValueError`` naming the first key of ``groups`` whose trained value differs from ``cfg``'s
    (``env.num_envs`` and the ``free_env_keys`` of the env group may differ). A key the checkpoint does
    not have counts as its default, so ``env.inner_estimates=true`` against an RL² checkpoint is refused."""
    from rl2_lightning.module import upgrade_hparams

    env, model, algo = upgrade_hparams(hparams["env"], hparams["model"], hparams["algo"])
    trained = {"env": {"inner_estimates": False, **env}, "model": model, "algo": algo}
    for group in groups:
        was = _flat(trained[group])
        for key, value in _flat(container(cfg[group])).items():
            if group == "env" and (key in ("num_envs", "tasks_dir") or key in free_env_keys):
                continue  # the batch size and the task-set folder may change; the free keys are the caller's
            if f"{group}.{key}" in EXECUTION_KEYS:
                continue  # how the network runs (e.g. compiled), not what it computes
            old = was.get(key, value)
            if old != value:
                raise ValueError(f"{what} was trained with {group}.{key}={old!r}, but the config has {value!r}")


def _flat(node: dict, prefix: str = "") -> dict:
    """``{"simulator": {"num_arms": 5}}`` -> ``{"simulator.num_arms": 5}``."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


#: the running moments of the value targets that a value-normalised critic's outputs are in units of
VALUE_MOMENTS = "algo.value_moments"


def warm_start_weights(source: str, cfg: DictConfig) -> tuple[dict[str, torch.Tensor], int]:
    """The actor's and critic's weights and the frames trained of ``init_from=source``: a Lightning
    checkpoint file, or ``pretrained:<preset>`` for a shipped policy (checksum-verified). The source's
    model must be this config's (sizes, memory, init); the env may differ (trial length, task draw), but
    not in anything that changes a weight's shape, which :func:`apply_warm_start` refuses in one line.
    Only the networks of ``cfg.init_parts`` (default: both) are returned; a value-normalised critic with the
    statistics its outputs are in units of (``algo.value_moments``, which a shipped policy does not keep)."""
    what = f"init_from={source!r}"
    if source.startswith("pretrained:"):
        record = read_record(source.split(":", 1)[1])
        hparams, state, frames = record["hyper_parameters"], record["state_dict"], int(record["frames"])
        full = state  # a shipped record holds the networks only
    else:
        ckpt = read_checkpoint(Path(source), arg="init_from", trust=bool(cfg.get("trust_checkpoint", False)))
        hparams, full = ckpt["hyper_parameters"], ckpt["state_dict"]
        state = {k: v for k, v in full.items() if k.startswith(("actor.", "critic."))}
        frames = int(full.get("frames", torch.zeros(())))
    check_trained_on(hparams, cfg, ("model",), what)
    parts = tuple(cfg.get("init_parts") or ("actor", "critic"))
    state = {k: v for k, v in state.items() if k.startswith(tuple(f"{p}." for p in parts))}
    if "critic" in parts and (hparams.get("algo") or {}).get("value_norm"):
        # A value-normalised critic outputs returns in the units of its run's statistics: without them its
        # values would be read in a fresh run's (the first batch's), and its targets built from those.
        moments = full.get(VALUE_MOMENTS)
        if moments is None:
            warnings.warn(f"{what}: the critic predicts normalised returns and the source holds no normalisation "
                          "statistics (a shipped policy keeps the networks only); it starts uncalibrated. "
                          "init_parts=[actor] starts a fresh critic instead", stacklevel=2)
        else:
            state[VALUE_MOMENTS] = moments
    return state, frames


def apply_warm_start(module, state: dict[str, torch.Tensor], frames: int, source: str) -> None:
    """Load warm-start weights into a freshly built module (one-line error on any shape mismatch). Each
    network that ``state`` has weights of must be complete there; a network it has none of (``init_parts``)
    keeps its fresh initialisation. A value-normalised critic comes with its statistics (``algo.value_moments``)."""
    own = module.state_dict()
    for key, value in state.items():
        if key not in own or own[key].shape != value.shape:
            have = tuple(own[key].shape) if key in own else "no such weight"
            raise ValueError(
                f"init_from={source!r}: its weight {key} {tuple(value.shape)} does not fit this config's agent ({have}); "
                "warm starts need the same observation and action sizes"
            )
    loaded = {k.split(".", 1)[0] for k in state if k != VALUE_MOMENTS}
    missing = [k for k in own if k.split(".", 1)[0] in loaded and k not in state]
    if missing:
        raise ValueError(f"init_from={source!r} has no weight {missing[0]} for this config's agent")
    module.load_state_dict(state, strict=False)
    module.frames.fill_(frames)


# ----------------------------------------------------------------------------------------- shipped policies
PRETRAINED_DIR = data_dir() / "pretrained"
MANIFEST = PRETRAINED_DIR / "manifest.json"


def weights_checksum(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def read_manifest(directory: Path | None = None) -> dict[str, Any]:
    """``{preset: {"file", "sha256", "setting", "frames", "note"}}`` (empty when nothing is shipped);
    ``directory`` defaults to the library's shipped policies."""
    path = (directory or PRETRAINED_DIR) / MANIFEST.name
    return json.loads(path.read_text()) if path.exists() else {}


def export_policy(
    ckpt: Path, preset: str, note: str = "", out_dir: Path = PRETRAINED_DIR, seconds: float | None = None,
    warm_start: str | None = None, training_run: str | None = None,
) -> Path:
    """Write the compact file of a training checkpoint for ``preset`` and record it in the manifest, with
    the training's wall-clock ``seconds`` (all stages, warm starts included), what it was warm-started from,
    and ``training_run``: the folder of ``data/training/`` that holds the run's curve and checkpoint when it
    is not ``preset`` (a long run shipped under the setting's name)."""
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
    entry = {"file": path.name, "sha256": record["sha256"], "file_sha256": file_sha256(path), "setting": setting,
             "frames": record["frames"], "note": note}
    if seconds is not None:
        entry["train_seconds"] = float(seconds)
    if warm_start:
        entry["warm_start"] = warm_start
    if training_run and training_run != preset:
        entry["training_run"] = training_run

    def record_entry(manifest: dict) -> None:
        old = manifest.get(preset, {})
        # the same weights: keep their recorded score
        manifest[preset] = {**old, **entry} if old.get("sha256") == entry["sha256"] else entry

    update_manifest(record_entry, out_dir)
    return path


def update_manifest(change, directory: Path | None = None) -> dict[str, Any]:
    """Read, ``change`` in place and write back the manifest of ``directory`` under an exclusive lock, the
    write atomic: two exports or scores at once (a 16-minute maze score beside an export) never lose
    each other's entries."""
    import fcntl

    directory = directory or PRETRAINED_DIR
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".manifest.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = read_manifest(directory)
        change(manifest)
        write_atomically(directory / MANIFEST.name, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
        return manifest


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return sha256_of(path.read_bytes())


def read_record(preset: str, directory: Path = PRETRAINED_DIR) -> dict[str, Any]:
    """The shipped record of ``preset``: its bytes checked against the manifest before anything is parsed,
    then loaded with ``weights_only=True``, its weights checked against their own checksum."""
    manifest = read_manifest(directory)
    if preset not in manifest:
        have = ", ".join(sorted(manifest)) or "none"
        raise FileNotFoundError(f"ckpt=pretrained: no shipped policy for {preset} (shipped: {have})")
    entry = manifest[preset]
    path = directory / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"ckpt=pretrained: {path} is missing")
    data = path.read_bytes()
    if "file_sha256" not in entry or sha256_of(data) != entry["file_sha256"]:
        raise ValueError(f"ckpt=pretrained: {path} does not match its checksum in {directory / 'manifest.json'}; refused unread")
    record = load_bytes(data, f"ckpt=pretrained: {path}")
    if not isinstance(record, dict) or "state_dict" not in record or "hyper_parameters" not in record:
        raise ValueError(f"ckpt=pretrained: {path} is not a shipped policy")
    digest = weights_checksum(record["state_dict"])
    if digest != record.get("sha256") or digest != entry["sha256"]:
        raise ValueError(f"ckpt=pretrained: {path} does not match its checksum in {directory / 'manifest.json'}")
    return record


def load_pretrained(preset: str, directory: Path = PRETRAINED_DIR):
    """The shipped RL² module of ``preset`` (:func:`read_record`; one-line errors for a preset without a
    shipped policy, a file that does not match, or a stored config naming a foreign ``_target_``)."""
    record = read_record(preset, directory)
    path = directory / read_manifest(directory)[preset]["file"]
    module = build_module(record["hyper_parameters"], f"ckpt=pretrained: {path}")
    load_networks(module, record["state_dict"], f"ckpt=pretrained: {path}")
    module.frames.fill_(record["frames"])
    module.pretrained = record
    return module.eval()
