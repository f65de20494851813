"""The Data Science Bowl 2018 layout: one folder per image, holding `images/` and `masks/`.

    ROOT/<id>/images/<id>.png     the image (RGBA or grey PNG; other image formats work too)
    ROOT/<id>/masks/*.png         one binary mask per nucleus (0 = background, anything else = the nucleus)

This is how BBBC038 (DSB 2018 stage 1) ships, and a layout other instance sets copy. Masks are
read in file-name order and painted in that order into one instance map (a later mask wins a pixel
claimed twice, which DSB 2018's corrected masks never do).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DessamError
from .images import IMAGE_SUFFIXES, image_shape, read_image_raw


@dataclass
class DsbImage:
    folder: Path
    image: Path        # the image file
    masks: list        # mask files, sorted by name


def _image_files(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def dsb_images(root: str | Path) -> list:
    """The image folders under `root` (sorted by name); a folder missing `images/` or `masks/`,
    or whose `images/` holds no single image, is an error naming it."""
    root = Path(root)
    if not root.is_dir():
        raise DessamError(f"{root}: DSB folder not found; pass the folder holding one sub-folder per image")
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images_dir, masks_dir = folder / "images", folder / "masks"
        if not images_dir.is_dir() or not masks_dir.is_dir():
            raise DessamError(f"{folder}: expected images/ and masks/ inside (the DSB 2018 layout); "
                              "remove the folder or fix its layout")
        images = _image_files(images_dir)
        if len(images) != 1:
            raise DessamError(f"{images_dir}: holds {len(images)} images; the DSB layout has exactly one per folder")
        found.append(DsbImage(folder, images[0], _image_files(masks_dir)))
    if not found:
        raise DessamError(f"{root}: no image folders (ID/images/ID.png, ID/masks/*.png) found; check --from dsb")
    return found


def dsb_label_map(item: DsbImage) -> np.ndarray:
    """The instance map (uint32, 0 = background) of one DSB folder, ids 1.. in mask-file order."""
    height, width = image_shape(item.image)
    labels = np.zeros((height, width), np.uint32)
    for index, path in enumerate(item.masks, start=1):
        mask = np.asarray(read_image_raw(path))
        if mask.ndim == 3:
            mask = mask[..., :3].max(axis=2) if mask.shape[2] >= 3 else mask[..., 0]
        if mask.shape != (height, width):
            raise DessamError(f"{path}: mask of {mask.shape[1]} x {mask.shape[0]} px for an image of "
                              f"{width} x {height} px ({item.image.name}); the mask belongs to another image")
        labels[mask > 0] = index
    return labels


def iter_dsb(root: str | Path) -> Iterator:
    """(DsbImage, instance map) for every image folder under `root`."""
    for item in dsb_images(root):
        yield item, dsb_label_map(item)
