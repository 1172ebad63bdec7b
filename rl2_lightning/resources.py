"""Where the library's own files are: its configs (``conf/``) and its small data files (``data/``).

In the repository they sit at the top level, beside the package; an installed wheel holds them inside
the package (``rl2_lightning/conf``, ``rl2_lightning/data``; see ``pyproject.toml``). This module is the
one place that knows both layouts. Files the library writes at run time (Gittins tables, maze WADs) go
beside its data when that folder is writable (a source checkout), else to a per-user cache.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

_PACKAGE = Path(str(files("rl2_lightning")))


def resource_dir(name: str) -> Path:
    """The library's ``conf`` or ``data`` folder: inside the installed package, else the checkout's."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"rl2_lightning's {name}/ folder is missing (looked in {_PACKAGE} and {_PACKAGE.parent}); reinstall the package"
    )


def conf_dir() -> Path:
    """The library's Hydra config folder (``train.yaml`` and the groups)."""
    return resource_dir("conf")


def data_dir() -> Path:
    """The library's data folder (task sets, shipped policies, baseline tables, maze pools)."""
    return resource_dir("data")


def cache_dir(*parts: str) -> Path:
    """``<parts>`` under the user's cache (``$XDG_CACHE_HOME/rl2_lightning``, by default
    ``~/.cache/rl2_lightning``), created."""
    out = (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rl2_lightning").joinpath(*parts)
    out.mkdir(parents=True, exist_ok=True)
    return out


def writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (or, if it does not exist yet, in its parent)."""
    probe = folder if folder.is_dir() else folder.parent
    return probe.is_dir() and os.access(probe, os.W_OK)


def writable_dir(*parts: str) -> Path:
    """``data/<parts>`` when it can be written (a source checkout), else :func:`cache_dir` ``(*parts)``."""
    inside = data_dir().joinpath(*parts)
    return inside if writable(inside) else cache_dir(*parts)
