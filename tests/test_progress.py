"""The progress bar's metrics (callbacks/progress.py)."""

from rl2_lightning.callbacks.progress import format_metrics


def test_frames_are_whole_numbers_and_the_logger_version_is_gone():
    shown = format_metrics({"v_num": "tb", "fps": 1605.506, "trial_return": 99.9241, "frames": 204800.0})
    assert shown == {"fps": "1,605", "trial_return": "99.92", "frames": "204,800"}
