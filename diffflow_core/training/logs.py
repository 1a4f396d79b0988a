"""Metric logs of a run folder: one JSON object per line (``metrics.jsonl``) and the same rows as CSV.

The CSV header is the union of the keys seen so far; when a new key appears the CSV is rewritten from the
JSONL (which is append-only and is the source of truth), so both always hold the same rows. Rewrites go
through :func:`~diffflow_core.checkpoint.atomic_file`, so a run killed mid-rewrite keeps the old log; a run
killed mid-append can leave a cut-short last line, which the next reader drops (and says so).
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

from diffflow_core.checkpoint import atomic_file
from diffflow_core.errors import CheckpointError

__all__ = ["MetricLog"]


class MetricLog:
    """Append rows to ``folder/metrics.jsonl`` and ``folder/metrics.csv``.

    ``keep`` (on resume: the number of rows the checkpoint had logged) keeps that many existing rows and
    drops the rest, which an interrupted run wrote after its last checkpoint; by default the log starts empty.
    """

    def __init__(self, folder: str | Path, keep: int = 0) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.jsonl, self.csv = self.folder / "metrics.jsonl", self.folder / "metrics.csv"
        self.rows = self.read()[:keep] if keep else []
        self.keys: list[str] = []
        self._rewrite()

    def read(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.jsonl``. A last line that is not a JSON object was cut short by an interrupted
        write (a kill, a full disk, a power loss): it is dropped, with one line on stderr. A bad line anywhere
        else is damage this cannot repair: a CheckpointError names the file and the line."""
        if not self.jsonl.exists():
            return []
        lines = [(number, line) for number, line in enumerate(self.jsonl.read_bytes().split(b"\n"), 1)
                 if line.strip()]
        rows = []
        for number, line in lines:
            try:
                row = json.loads(line)
            except ValueError:  # JSONDecodeError, or UnicodeDecodeError from a cut multi-byte character
                row = None
            if isinstance(row, dict):
                rows.append(row)
            elif number == lines[-1][0]:
                print(f"diffflow: warning: {self.jsonl}: dropped its last line ({len(line)} bytes, not a JSON "
                      "row), cut short by an interrupted write", file=sys.stderr)
            else:
                raise CheckpointError(f"metrics log: {self.jsonl} line {number} is not a JSON row (only a cut-short "
                                      "last line can be dropped); move the file away to continue without its rows")
        return rows

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if any(k not in self.keys for k in row):
            self._rewrite()
            return
        with self.csv.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.keys).writerow(row)

    def _rewrite(self) -> None:
        self.keys = list(dict.fromkeys(k for r in self.rows for k in r))
        with atomic_file(self.jsonl, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.rows)
        with atomic_file(self.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.keys)
            if self.keys:
                writer.writeheader()
            writer.writerows(self.rows)
