"""One-line errors for the command-line entry points.

The checks of this package (config values, presets, checkpoints, task sets, run directories, disk
space, non-finite losses) raise ``ValueError``, ``OSError`` (``FileNotFoundError``) or
``FloatingPointError`` with a message that names the setting or the file. At the command line that
message is all the user needs, so the entry points print it as one line and exit with status 1; with
``HYDRA_FULL_ERROR=1`` (Hydra's own switch) the traceback is shown instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

class MissingExtra(ImportError):
    """An optional part of the library was asked for and its packages are not installed."""


#: what a check raises; anything else is a bug and keeps its traceback
USER_ERRORS = (ValueError, OSError, FloatingPointError, MissingExtra)


def require_extra(module: str, extra: str, what: str):
    """``module`` imported, or a one-line :class:`MissingExtra` naming the pip extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise MissingExtra(f"{what} needs {module.split('.')[0]}, which is not installed: "
                           f"pip install 'rl2-lightning[{extra}]'") from None


def _hydra_errors() -> tuple[type[BaseException], ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return (HydraException, OmegaConfBaseException)


def first_line(err: BaseException) -> str:
    """The message of an error on one line (Hydra's composition errors span several), with the reason
    it wraps: Hydra's ``Error in call to target 'X':`` keeps the exception that target raised."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    line = lines[0] if lines else type(err).__name__
    line = re.sub(r"^\w+ raised while resolving interpolation: ", "", line)
    cause = err.__cause__
    if cause is not None and line.endswith(":"):
        line = f"{line} {type(cause).__name__}: {first_line(cause)}"
    return line


@contextlib.contextmanager
def one_line_errors(remove_stub: bool = False):
    """Turn the package's own errors into ``error: <message>`` on stderr and exit status 1.

    With ``remove_stub``, the run directory Hydra made for this invocation is deleted if the run failed
    before writing anything into it.
    """
    try:
        yield
    except (*USER_ERRORS, *_hydra_errors()) as err:
        if remove_stub:
            _remove_hydra_stub()
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {first_line(err)}", file=sys.stderr)
        sys.exit(1)


def _remove_hydra_stub() -> None:
    from hydra.core.hydra_config import HydraConfig

    from rl2_lightning.runs import remove_if_stub

    if HydraConfig.initialized():
        remove_if_stub(Path(HydraConfig.get().runtime.output_dir))
