"""What every converter to COCO shares: the summary it reports, the COCO lists it builds, the images
it matches annotation files to (by stem), and label maps and polygons turned into annotations."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from tqdm import tqdm

from ..errors import DessamError
from .coco import label_map_to_annotations, mask_to_rle, segmentation_to_mask
from .images import IMAGE_SUFFIXES, image_shape


@dataclass
class ConvertSummary:
    out_json: Path
    images: int = 0
    annotations: int = 0
    with_masks: int = 0
    notes: list[str] = field(default_factory=list)  # skipped files and shapes, one line each
    sources: Optional[int] = None  # images annotated, when not one COCO image each (slides cut in tiles)

    def __str__(self) -> str:
        lines = [f"wrote {self.out_json}: {self.images} images, {self.annotations} nuclei "
                 f"({self.with_masks} with masks)"]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


@dataclass
class Collected:
    """COCO lists being built."""

    images: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)

    def add_image(self, file_name: str, height: int, width: int) -> int:
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        return image_id

    def add(self, image_id: int, bbox: list[float], segmentation: Optional[dict] = None, area: Optional[float] = None):
        ann = {"id": len(self.annotations) + 1, "image_id": image_id, "category_id": 1,
               "bbox": [float(v) for v in bbox], "iscrowd": 0}
        ann["area"] = float(bbox[2] * bbox[3]) if area is None else area
        if segmentation is not None:
            ann["segmentation"] = segmentation
        self.annotations.append(ann)


def index_images(images_dir: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """stem -> image path (searched recursively); two images with one stem is an error."""
    if not images_dir.is_dir():
        raise DessamError(f"{images_dir}: images folder not found; pass the folder holding the images")
    index: dict[str, Path] = {}
    for path in sorted(images_dir.rglob("*")):
        if path.suffix.lower() in suffixes and path.is_file() and not path.name.startswith("."):
            if path.stem in index:
                raise DessamError(
                    f"{path}: same file stem as {index[path.stem]}; image stems must be unique for matching"
                )
            index[path.stem] = path
    return index


def source_files(src: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise DessamError(f"{src}: annotation source not found; pass a file or a folder")
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise DessamError(f"{src}: no {'/'.join(suffixes)} files found; check the folder and --from format")
    return files


def match_image(ann_path: Path, stem: str, index: dict[str, Path], images_dir: Path) -> Path:
    if stem not in index:
        raise DessamError(
            f"{ann_path}: no image with stem {stem!r} in {images_dir}; add the image or remove the annotation file"
        )
    return index[stem]


def relative_name(path: Path, images_dir: Path) -> str:
    return path.relative_to(images_dir).as_posix()


def check_size(ann_path: Path, image_path: Path, ann_hw: tuple[int, int], image_hw: tuple[int, int]) -> None:
    if tuple(ann_hw) != tuple(image_hw):
        raise DessamError(
            f"{ann_path}: annotation size {ann_hw[1]} x {ann_hw[0]} differs from image {image_path} "
            f"({image_hw[1]} x {image_hw[0]}); the annotation belongs to another image or was resized"
        )


def as_label_map(arr: np.ndarray, path: Path) -> np.ndarray:
    """A 2-D non-negative integer instance map from a label image or array."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):  # colour-coded instances
        rgb = arr[:, :, :3].astype(np.uint32)
        arr = (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]
    if arr.ndim != 2:
        raise DessamError(f"{path}: label array has shape {arr.shape}; expected one 2-D instance map")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DessamError(f"{path}: label array holds non-integer values; save instance ids as integers")
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise DessamError(f"{path}: label array has type {arr.dtype}; expected integers")
    if arr.size and arr.min() < 0:
        raise DessamError(f"{path}: label array has negative values; use 0 for background and 1.. for nuclei")
    return arr


def from_label_maps(files, read: Callable[[Path], np.ndarray], stem_of, index, images_dir, out: Collected):
    for path in tqdm(files, desc="converting label maps", unit="file", disable=None):
        image_path = match_image(path, stem_of(path), index, images_dir)
        labels = as_label_map(read(path), path)
        check_size(path, image_path, labels.shape, image_shape(image_path))
        image_id = out.add_image(relative_name(image_path, images_dir), *labels.shape)
        for ann in label_map_to_annotations(labels, image_id, first_ann_id=len(out.annotations) + 1):
            out.annotations.append(ann)


def mask_annotation(mask: np.ndarray) -> tuple[list[float], dict, int]:
    """bool mask -> (bbox x, y, w, h of its pixels, RLE, area); area 0 for an empty mask."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return [], {}, 0
    bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    return bbox, mask_to_rle(mask), int(ys.size)


def add_polygon(out: Collected, image_id: int, flat: list[float], hw: tuple[int, int], summary, where: str):
    bbox, rle, area = mask_annotation(segmentation_to_mask([list(flat)], *hw))
    if area == 0:
        summary.notes.append(f"{where}: polygon covers no pixel, skipped")
    else:
        out.add(image_id, bbox, rle, area)
