"""Labelled progress bars for every long phase (training, a data score's pre-training, sampling, likelihood).

Bars go to stderr, so machine-readable output on stdout (``--json``, metrics) stays clean, and vanish when done.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

__all__ = ["progress_bar", "solve_progress"]


def progress_bar(total: int, label: str, enabled: bool = True, initial: int = 0):
    """A ``tqdm`` bar of ``total`` steps named ``label``, or None when disabled."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=label, leave=False, dynamic_ncols=True, mininterval=0.5)


@contextlib.contextmanager
def solve_progress(total: int, label: str | None, callback: Callable | None = None) -> Iterator[Callable | None]:
    """A solver callback that advances a bar of ``total`` steps named ``label`` (no bar when ``label`` is None)
    and then calls ``callback``; the bar is closed when the block ends, also on an error."""
    bar = progress_bar(total, label, enabled=label is not None)
    if bar is None:
        yield callback
        return

    def advance(info) -> None:
        bar.update(1)
        if callback is not None:
            callback(info)

    try:
        yield advance
    finally:
        bar.close()
