"""Check a COCO file and its images before training, listing every problem at once.

Errors stop training (`raise_on_errors`): missing or unreadable images, sizes in the file that
differ from the image, duplicate image or annotation ids, annotations pointing to unknown images
or categories, negative or non-finite box values (a negative width/height; a negative x/y only
means the box is partly outside), file names escaping the image folder, masks of the wrong size.
Warnings are counted, not fatal: boxes partly outside the image (training clips them), zero-size
boxes (training drops them), crowd annotations (skipped), images without annotations.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..errors import DessamError
from .coco import clip_box, escapes_folder, read_json
from .images import image_shape, read_image_raw

WARN_CLIPPED = "boxes partly outside the image (training clips them)"
WARN_ZERO = "zero-size boxes (training drops them)"
WARN_CROWD = "crowd annotations (skipped)"
WARN_EMPTY = "images without annotations"
MAX_LISTED = 20


@dataclass
class ValidationReport:
    json_path: Path
    images_dir: Path
    errors: list[str] = field(default_factory=list)
    warnings: Counter = field(default_factory=Counter)
    images: int = 0
    annotations: int = 0
    with_masks: int = 0
    boxes_only: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def table(self, markdown: bool = True) -> str:
        """Summary as a Markdown table (or aligned plain text)."""
        rows = [("images", self.images), ("annotations", self.annotations), ("annotations with masks", self.with_masks),
                ("annotations with boxes only", self.boxes_only)]
        rows += [(name, self.warnings.get(name, 0)) for name in (WARN_CLIPPED, WARN_ZERO, WARN_CROWD, WARN_EMPTY)]
        rows.append(("errors", len(self.errors)))
        if markdown:
            return "\n".join(["| check | count |", "| --- | ---: |"] + [f"| {k} | {v} |" for k, v in rows])
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v:>8}" for k, v in rows)

    def text(self, markdown: bool = False) -> str:
        """Title, table and the first errors, for printing."""
        status = "OK" if self.ok else f"{len(self.errors)} error(s)"
        lines = [f"{self.json_path} with images in {self.images_dir}: {status}", "", self.table(markdown)]
        if self.errors:
            lines += ["", "errors:"] + [f"- {e}" for e in self.errors[:MAX_LISTED]]
            if len(self.errors) > MAX_LISTED:
                lines.append(f"- ... and {len(self.errors) - MAX_LISTED} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()


def raise_on_errors(report: ValidationReport) -> None:
    """Raise one DessamError summarising the errors, if any."""
    if report.errors:
        more = f" (and {len(report.errors) - 1} more; run `dessam validate` for the list)" if len(report.errors) > 1 else ""
        raise DessamError(report.errors[0] + more)


def _duplicates(ids: list) -> list:
    return sorted((k for k, n in Counter(ids).items() if n > 1), key=str)


def _check_image(report: ValidationReport, img: dict, decode: bool):
    """Check one image entry; return the (height, width) boxes are checked against, or None."""
    where = report.json_path
    name = str(img.get("file_name"))
    if escapes_folder(name):
        report.errors.append(f"{where}: image {name!r} points outside the images folder; use a relative path without '..'")
        return None
    path = report.images_dir / name
    if not path.is_file():
        report.errors.append(f"{where}: image {name!r} not found in {report.images_dir}")
        return None
    try:
        hw = read_image_raw(path).shape[:2] if decode else image_shape(path)
    except DessamError as exc:
        report.errors.append(f"{where}: image {name!r} unreadable: {exc}")
        return None
    claimed = (img.get("height"), img.get("width"))
    if None not in claimed and not all(isinstance(v, int) and not isinstance(v, bool) for v in claimed):
        report.errors.append(f"{where}: image {name!r} has height/width {claimed}; expected integers")
    elif None not in claimed and tuple(claimed) != tuple(hw):
        report.errors.append(
            f"{where}: image {name!r} is listed as {claimed[1]} x {claimed[0]} but the file is {hw[1]} x {hw[0]}"
        )
    return tuple(hw)


def _check_annotation(report: ValidationReport, ann: dict, sizes: dict, categories: set) -> None:
    where = f"{report.json_path}: annotation {ann.get('id')}"
    if ann.get("image_id") not in sizes:
        report.errors.append(f"{where} refers to unknown image id {ann.get('image_id')!r}")
        return
    if categories and ann.get("category_id") not in categories:
        report.errors.append(f"{where} has unknown category_id {ann.get('category_id')!r}")
    bbox = ann.get("bbox")
    numbers = isinstance(bbox, (list, tuple)) and len(bbox) == 4
    numbers = numbers and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
    if not numbers or not all(math.isfinite(v) for v in bbox):
        report.errors.append(f"{where} has bbox {bbox!r}; expected four finite numbers x, y, w, h")
        return
    if bbox[2] < 0 or bbox[3] < 0:
        report.errors.append(f"{where} has a negative width or height in bbox {bbox}")
        return
    seg = ann.get("segmentation")
    report.with_masks += bool(seg)
    report.boxes_only += not seg
    if sizes[ann["image_id"]] is None:  # image problem already reported
        return
    height, width = sizes[ann["image_id"]]
    if seg:
        if isinstance(seg, dict) and [int(v) for v in seg.get("size", [])] != [height, width]:
            report.errors.append(f"{where} has an RLE mask of size {seg.get('size')} on a {height} x {width} image")
    if ann.get("iscrowd", 0):
        report.warnings[WARN_CROWD] += 1
        return
    box, clipped = clip_box(bbox, height, width)
    if box[2] <= box[0] or box[3] <= box[1]:
        report.warnings[WARN_ZERO] += 1
    elif clipped:
        report.warnings[WARN_CLIPPED] += 1


def validate_coco(json_path: str | os.PathLike, images_dir: str | os.PathLike, decode: bool = True,
                  progress: bool = True) -> ValidationReport:
    """Check everything and return a report (never raises for problems in the data).

    With `decode=True` every image is fully decoded, which also catches truncated files;
    `decode=False` reads headers only (faster for large datasets).
    """
    report = ValidationReport(Path(json_path), Path(images_dir))
    try:
        data = read_json(report.json_path)
    except DessamError as exc:
        report.errors.append(str(exc))
        return report
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        report.errors.append(f"{report.json_path}: needs 'images' and 'annotations' lists; see the COCO format")
        return report
    images = [i for i in data["images"] if isinstance(i, dict)]
    annotations = [a for a in data["annotations"] if isinstance(a, dict)]
    report.images, report.annotations = len(data["images"]), len(data["annotations"])
    if len(images) < report.images or len(annotations) < report.annotations:
        report.errors.append(f"{report.json_path}: some entries of 'images' or 'annotations' are not JSON objects")
    for key, kind, entries in (("id", "image", images), ("file_name", "image", images), ("id", "annotation", annotations)):
        missing = sum(key not in e for e in entries)
        if missing:
            report.errors.append(f"{report.json_path}: {missing} {kind} entries lack '{key}'")
    for kind, entries in (("image", images), ("annotation", annotations)):
        dup = _duplicates([e["id"] for e in entries if "id" in e])
        if dup:
            report.errors.append(f"{report.json_path}: duplicate {kind} id(s) {dup[:10]}; ids must be unique")

    categories = {c.get("id") for c in data.get("categories") or [] if isinstance(c, dict)}
    sizes = {}
    for img in tqdm([i for i in images if "file_name" in i], desc="checking images", unit="img", disable=not progress):
        sizes[img.get("id")] = _check_image(report, img, decode)
    for ann in annotations:
        _check_annotation(report, ann, sizes, categories)
    annotated = {a.get("image_id") for a in annotations}
    report.warnings[WARN_EMPTY] += sum(1 for i in images if i.get("id") not in annotated)
    return report
