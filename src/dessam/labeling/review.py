"""The review sheet of a labelling run: the least certain masks first, for a person to check.

- `review.png`: a mosaic of the first `count` masks in review order, each a crop around its box
  (the box in cyan, the mask's outline in yellow, red when flagged) with its annotation id, file,
  predicted IoU, stability score and flags written under it;
- `review.csv`: every annotation in review order with its scores and flags.

Review order: flagged masks (empty, leaving their box) first, then the others by certainty, the
lower of the predicted IoU and the stability score, from the lowest up.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from ..atomic import atomic_path, write_atomic
from ..data.coco import rle_to_mask
from ..data.images import read_image
from ..geometry.inputs import box_scale

TILE = 160          # pixels of a mosaic tile's picture
CAPTION = 30        # pixels of its two caption lines
COLUMNS = 8
CONTEXT = 0.5       # the crop shows the box and this fraction of its longer side around it
BOX_COLOUR, MASK_COLOUR, FLAGGED_COLOUR = (0, 200, 255), (255, 230, 0), (255, 40, 40)
CSV_COLUMNS = ("rank", "image_id", "file_name", "annotation_id", "x", "y", "width", "height", "area",
               "predicted_iou", "stability_score", "outside_fraction", "flags")


@dataclass
class ReviewItem:
    """One labelled annotation, as the review sheet shows it."""

    image_path: Path
    file_name: str
    image_id: int
    annotation_id: int
    box: np.ndarray              # x1 y1 x2 y2, image pixels
    segmentation: dict           # COCO RLE at the image's size
    area: int
    predicted_iou: float
    stability_score: float
    outside_fraction: float
    flags: list = field(default_factory=list)

    @property
    def certainty(self) -> float:
        return certainty(self.predicted_iou, self.stability_score)


def certainty(predicted_iou: float, stability_score: float) -> float:
    """How sure SAM is of a mask: the lower of its predicted IoU and its stability score."""
    return min(predicted_iou, stability_score)


def review_order(items: list) -> list:
    """Flagged items first, then by certainty from the lowest (ties keep their order)."""
    return sorted(items, key=lambda item: (not item.flags, item.certainty))


def write_review_csv(path, ordered: list) -> Path:
    def write(tmp: Path):
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for rank, item in enumerate(ordered, start=1):
                x1, y1, x2, y2 = (float(v) for v in item.box)
                writer.writerow([rank, item.image_id, item.file_name, item.annotation_id, f"{x1:.1f}", f"{y1:.1f}",
                                 f"{x2 - x1:.1f}", f"{y2 - y1:.1f}", item.area, f"{item.predicted_iou:.4f}",
                                 f"{item.stability_score:.4f}", f"{item.outside_fraction:.4f}", ";".join(item.flags)])
    return write_atomic(path, write)


def _crop_region(box: np.ndarray, shape: tuple) -> tuple:
    """(y0, x0, y1, x1): a square around the box with some context, inside the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 8.0) * (1 + 2 * CONTEXT)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    top, left = max(int(math.floor(cy - side / 2)), 0), max(int(math.floor(cx - side / 2)), 0)
    bottom, right = min(int(math.ceil(cy + side / 2)), shape[0]), min(int(math.ceil(cx + side / 2)), shape[1])
    return top, left, max(bottom, top + 1), max(right, left + 1)


def review_tile(image: np.ndarray, item: ReviewItem) -> np.ndarray:
    """The tile picture (TILE x TILE x 3 uint8) of one item: its surroundings, box and outline."""
    top, left, bottom, right = _crop_region(item.box, image.shape[:2])
    scale = TILE / max(bottom - top, right - left)
    size = (max(int(round((right - left) * scale)), 1), max(int(round((bottom - top) * scale)), 1))
    picture = np.asarray(Image.fromarray(image[top:bottom, left:right]).resize(size, Image.BILINEAR)).copy()
    mask = rle_to_mask(item.segmentation)[top:bottom, left:right]
    mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
    outline = mask & ~ndimage.binary_erosion(mask, border_value=0)
    picture[outline] = FLAGGED_COLOUR if item.flags else MASK_COLOUR
    tile = np.zeros((TILE, TILE, 3), dtype=np.uint8)
    tile[:picture.shape[0], :picture.shape[1]] = picture
    canvas = Image.fromarray(tile)
    sx, sy = box_scale((bottom - top, right - left), (size[1], size[0]))[:2]
    x1, y1, x2, y2 = (float(v) for v in item.box)
    x1, y1 = (x1 - left) * sx, (y1 - top) * sy
    x2, y2 = max((x2 - left) * sx - 1, x1), max((y2 - top) * sy - 1, y1)
    ImageDraw.Draw(canvas).rectangle([x1, y1, x2, y2], outline=BOX_COLOUR)
    return np.asarray(canvas)


def write_review_png(path, ordered: list, count: int) -> Path:
    """The mosaic of the first `count` items; each image is read once."""
    shown = ordered[:count]
    columns = max(min(COLUMNS, len(shown)), 1)
    rows = max(math.ceil(len(shown) / columns), 1)
    sheet = Image.new("RGB", (columns * TILE, rows * (TILE + CAPTION)), (40, 40, 40))
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    if not shown:
        draw.text((4, 4), "no annotations", fill=(255, 255, 255), font=font)
    by_image = {}
    for rank, item in enumerate(shown):
        by_image.setdefault(item.image_path, []).append(rank)
    for image_path, ranks in by_image.items():
        image = read_image(image_path)
        for rank in ranks:
            item = shown[rank]
            x, y = (rank % columns) * TILE, (rank // columns) * (TILE + CAPTION)
            sheet.paste(Image.fromarray(review_tile(image, item)), (x, y))
            flags = f" {','.join(item.flags)}" if item.flags else ""
            draw.text((x + 2, y + TILE + 2), f"#{item.annotation_id} {item.file_name}"[:26], fill=(230, 230, 230),
                      font=font)
            draw.text((x + 2, y + TILE + 15), f"IoU {item.predicted_iou:.2f} st {item.stability_score:.2f}{flags}",
                      fill=FLAGGED_COLOUR if item.flags else (230, 230, 230), font=font)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return Path(path)


def write_review(folder, items: list, count: int = 48) -> tuple:
    """`folder/review.png` (the `count` least certain masks) and `folder/review.csv` (all)."""
    folder = Path(folder)
    ordered = review_order(items)
    return write_review_png(folder / "review.png", ordered, count), write_review_csv(folder / "review.csv", ordered)
