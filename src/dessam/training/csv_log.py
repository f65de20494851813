"""A CSV log written one row at a time, that a resumed run cuts back to where it resumes."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

from ..atomic import atomic_path


class CsvLog:
    """Rows of `columns`; on resume (`keep_until`), rows whose `key` column is past it are dropped."""

    def __init__(self, path: Path, columns: list, key: str, keep_until: Optional[int] = None):
        self.columns = list(columns)
        rows = []
        if keep_until is not None and Path(path).is_file():
            with open(path, newline="") as handle:
                rows = [row for row in csv.DictReader(handle)
                        if str(row.get(key)).isdigit() and int(row[key]) <= keep_until]
        with atomic_path(path) as tmp:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, self.columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
        self.handle = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.handle, self.columns, extrasaction="ignore")

    def write(self, row: dict) -> None:
        self.writer.writerow({k: row.get(k, "") for k in self.columns})
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()
