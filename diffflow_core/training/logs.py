"""Metric logs of a run folder: one JSON object per line (``metrics.jsonl``) and the same rows as CSV.

The CSV header is the union of the keys seen so far; when a new key appears the CSV is rewritten from the
JSONL (which is append-only and is the source of truth), so both always hold the same rows.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

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
        if not self.jsonl.exists():
            return []
        return [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]

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
        with self.jsonl.open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.rows)
        with self.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.keys)
            if self.keys:
                writer.writeheader()
            writer.writerows(self.rows)
