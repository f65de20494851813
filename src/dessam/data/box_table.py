"""Box tables: CSV files with one box per row, the header naming the columns.

The header decides (names in any case, spaces around them ignored; other columns are ignored):

- ``x, y, width, height`` (or ``w, h``): the top-left corner and the size;
- ``x1, y1, x2, y2`` (or ``xmin, ymin, xmax, ymax``): two corners on pixel edges, so
  ``x2 = x1 + width`` (the way dessam writes boxes; Pascal VOC's inclusive 1-based corners are
  read by ``--from voc``);
- optionally ``image`` (or ``file``, ``filename``, ``file_name``, ``image_name``, ``slide``):
  the image each box is on, matched by file stem. Without it the whole table is on the image
  with the table's own file stem (one table per image).

Coordinates are pixels of the image (level 0 of a slide). Commas, semicolons or tabs separate
the columns.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional

from ..errors import DessamError
from .shapes import Shape

_CORNERS = (("x", "y", "width", "height"), ("x", "y", "w", "h"), ("x1", "y1", "x2", "y2"), ("xmin", "ymin", "xmax", "ymax"))
_IMAGE_COLUMNS = ("image", "file", "filename", "file_name", "image_name", "slide")
_EXPECTED = "x, y, width, height or x1, y1, x2, y2"


def _columns(header: list[str], path: Path) -> tuple[tuple[int, ...], bool, Optional[int]]:
    """(indices of the four box columns, True if they are corners, index of the image column)."""
    names = [h.strip().lower() for h in header]
    for group in _CORNERS:
        if all(n in names for n in group):
            image = next((names.index(n) for n in _IMAGE_COLUMNS if n in names), None)
            return tuple(names.index(n) for n in group), group[2] in ("x2", "xmax"), image
    raise DessamError(f"{path}: the header names the columns {header}, but a box table needs {_EXPECTED} "
                      "(header names decide, any case); rename the columns")


def _dialect(sample: str):
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        return csv.excel


def read_box_table(path: str | Path) -> dict[str, list[Shape]]:
    """The boxes of a table, per image stem (the table's own stem when it has no image column)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DessamError(f"{path}: cannot read the box table ({exc}); save it as UTF-8 CSV") from exc
    rows = list(csv.reader(text.splitlines(), _dialect(text[:4096])))
    if not rows:
        raise DessamError(f"{path}: the box table is empty; its first line must name the columns ({_EXPECTED})")
    (a, b, c, d), corners, image = _columns(rows[0], path)
    boxes: dict[str, list[Shape]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path} line {line}"
        try:
            values = [float(row[k]) for k in (a, b, c, d)]
        except IndexError:
            raise DessamError(f"{where}: the row has {len(row)} cells, fewer than the header; fix the table") from None
        except ValueError:
            raise DessamError(f"{where}: the box is not four numbers ({', '.join(row[k] for k in (a, b, c, d))}); "
                              "fix the table") from None
        x1, y1 = values[0], values[1]
        x2, y2 = (values[2], values[3]) if corners else (x1 + values[2], y1 + values[3])
        if not all(map(math.isfinite, values)) or x2 < x1 or y2 < y1:
            raise DessamError(f"{where}: the box has a negative or non-finite size; fix the table")
        stem = path.stem
        if image is not None:
            name = row[image].strip().replace("\\", "/") if image < len(row) else ""
            if not name:
                raise DessamError(f"{where}: the {rows[0][image].strip()} column is empty; name the image of every box")
            stem = Path(name).stem
        boxes.setdefault(stem, []).append(Shape((x1, y1, x2, y2), None, where))
    return boxes
