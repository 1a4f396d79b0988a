"""Labelled progress bars for every long phase (training, a data score's pre-training, sampling, likelihood).

Bars go to stderr, so machine-readable output on stdout (``--json``, metrics) stays clean, and vanish when done.
"""
from __future__ import annotations

from typing import Callable

__all__ = ["progress_bar", "step_callback"]


def progress_bar(total: int, label: str, enabled: bool = True, initial: int = 0):
    """A ``tqdm`` bar of ``total`` steps named ``label``, or None when disabled."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=label, leave=False, dynamic_ncols=True, mininterval=0.5)


def step_callback(bar, callback: Callable | None = None) -> Callable | None:
    """A solver callback that advances ``bar`` by one step and then calls ``callback``."""
    if bar is None:
        return callback

    def advance(info) -> None:
        bar.update(1)
        if callback is not None:
            callback(info)

    return advance
