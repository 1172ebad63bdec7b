"""The progress bar: Lightning's own (Rich where installed, else tqdm), showing what an RL² run is about."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE


def format_metrics(metrics: dict) -> dict:
    """Frames and fps as whole numbers, the return with two decimals, and no logger version (``v_num``)."""
    out = {k: v for k, v in metrics.items() if k != "v_num"}
    for key in ("frames", "fps"):
        if key in out:
            out[key] = f"{int(float(out[key])):,}"
    if "trial_return" in out:
        out["trial_return"] = f"{float(out['trial_return']):.2f}"
    return out


class _RunMetrics:
    def get_metrics(self, trainer, pl_module):  # noqa: D102
        return format_metrics(super().get_metrics(trainer, pl_module))


class RunRichProgressBar(_RunMetrics, RichProgressBar):
    """Lightning's Rich bar with :func:`format_metrics`."""


class RunTQDMProgressBar(_RunMetrics, TQDMProgressBar):
    """Lightning's tqdm bar with :func:`format_metrics`."""


def run_progress_bar():
    """The bar Lightning would choose by default, with the run's metrics formatted."""
    return RunRichProgressBar() if _RICH_AVAILABLE else RunTQDMProgressBar()
