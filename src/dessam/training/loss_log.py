"""`RUN/log.csv`: every loss term and the learning rate, one row per training iteration."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

from ..atomic import atomic_path
from ..models.dessam import LOSS_NAMES

LOG_COLUMNS = ("epoch", "iteration", "lr", "total") + LOSS_NAMES + ("skipped_nonfinite",)


class LossLog:
    """`RUN/log.csv`: one row per iteration. On resume, rows past the checkpoint are dropped."""

    def __init__(self, path: Path, keep_until: Optional[int] = None):
        self.path = path
        rows = []
        if keep_until is not None and path.is_file():
            with open(path, newline="") as handle:
                rows = [row for row in csv.DictReader(handle) if _complete(row) and int(row["iteration"]) <= keep_until]
        with atomic_path(path) as tmp:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, LOG_COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
        self.handle = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.handle, LOG_COLUMNS)

    def write(self, row: dict) -> None:
        self.writer.writerow({k: row.get(k, "") for k in LOG_COLUMNS})
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def _complete(row: dict) -> bool:
    """False for a row cut short by a killed run (its last column, a 0/1 flag, is missing)."""
    return row.get("skipped_nonfinite") in ("0", "1") and str(row.get("iteration")).isdigit()
