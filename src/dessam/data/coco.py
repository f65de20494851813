"""Read and write COCO instance annotations (boxes, optional masks).

Every annotation is a nucleus whatever its category (dessam has one foreground class).
A file with boxes only (no ``segmentation``) is valid: that is what DES-SAM trains from.
Boxes leave this module as ``x1, y1, x2, y2`` pixels; partly-outside boxes are clipped to the
image and zero-size boxes dropped, both counted. Annotations with ``iscrowd = 1`` mark regions
to ignore in COCO; they are skipped and counted.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Optional

import numpy as np
from pycocotools import mask as mask_utils

from ..atomic import write_text_atomic
from ..errors import DessamError
from .images import image_shape

DEFAULT_CATEGORIES = [{"id": 1, "name": "nucleus", "supercategory": "cell"}]


@dataclass
class ImageRecord:
    id: int
    file_name: str
    path: Path
    height: int
    width: int
    boxes: np.ndarray  # (N, 4) float32 x1y1x2y2, clipped to the image, zero-size dropped
    annotation_ids: list[int]
    segmentations: list  # COCO segmentation per kept box, or None when absent


@dataclass
class CocoDataset:
    path: Path
    images: list[ImageRecord]
    categories: list[dict]
    clipped_boxes: int
    dropped_boxes: int
    crowd_boxes: int = 0
    image_ids: dict = field(default_factory=dict, repr=False)  # id -> index into images


def read_json(json_path: Path) -> Any:
    """Parse a JSON file; errors name the file (and line/column for syntax errors)."""
    if not json_path.is_file():
        raise DessamError(f"{json_path}: annotation file not found; check the path")
    try:
        text = json_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DessamError(f"{json_path}: cannot read ({exc}); save it as UTF-8 JSON") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DessamError(
            f"{json_path}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); fix the file"
        ) from exc


def escapes_folder(file_name: str) -> bool:
    """True for absolute names or names with a `..` part (either slash style)."""
    if PurePosixPath(file_name).is_absolute() or PureWindowsPath(file_name).is_absolute():
        return True
    if PureWindowsPath(file_name).drive:
        return True
    parts = file_name.replace("\\", "/").split("/")
    return ".." in parts


def _require(obj: Any, keys: tuple[str, ...], what: str, json_path: Path) -> None:
    if not isinstance(obj, dict):
        raise DessamError(f"{json_path}: {what} is not a JSON object; see the COCO format")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DessamError(f"{json_path}: {what} lacks required key(s) {', '.join(missing)}; add them")


def _segmentation_or_none(ann: dict) -> Optional[Any]:
    seg = ann.get("segmentation")
    if seg is None or (isinstance(seg, (list, dict)) and len(seg) == 0):
        return None
    return seg


def clip_box(xywh: Any, height: int, width: int) -> tuple[np.ndarray, bool]:
    """COCO x,y,w,h -> clipped x1,y1,x2,y2 and whether clipping changed it."""
    x, y, w, h = (float(v) for v in xywh)
    box = np.array([x, y, x + w, y + h], dtype=np.float64)
    clipped = np.clip(box, 0.0, [width, height, width, height])
    return clipped.astype(np.float32), bool(np.any(clipped != box))


def parse_bbox(ann: dict, json_path: Path) -> list[float]:
    """The annotation's bbox as four finite floats, or a DessamError naming the file."""
    bbox = ann.get("bbox")
    ok = isinstance(bbox, (list, tuple)) and len(bbox) == 4
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
    if not ok or not all(math.isfinite(v) for v in bbox):
        raise DessamError(
            f"{json_path}: annotation {ann.get('id')} has bbox {bbox!r}; expected four finite numbers x, y, w, h"
        )
    return [float(v) for v in bbox]


def _image_record(img: dict, json_path: Path, images_dir: Path, index: dict) -> ImageRecord:
    """One entry of 'images', checked, as a record without annotations yet (`index`: the ids seen)."""
    _require(img, ("id", "file_name"), "an entry of 'images'", json_path)
    file_name = str(img["file_name"])
    if escapes_folder(file_name):
        raise DessamError(
            f"{json_path}: image file_name {file_name!r} points outside the images folder; "
            "use a path relative to --images without '..'"
        )
    if img["id"] in index:
        raise DessamError(f"{json_path}: image id {img['id']} appears twice; give each image a unique id")
    path = images_dir / file_name
    if not path.is_file():
        raise DessamError(
            f"{json_path}: image {file_name!r} not found in {images_dir}; check --images "
            "(run `dessam validate` for a full list)"
        )
    if "height" in img and "width" in img:
        height, width = int(img["height"]), int(img["width"])
    else:
        height, width = image_shape(path)
    return ImageRecord(img["id"], file_name, path, height, width, np.zeros((0, 4), np.float32), [], [])


def load_coco(json_path: str | os.PathLike, images_dir: str | os.PathLike) -> CocoDataset:
    """Load a COCO file whose ``file_name`` entries are relative to `images_dir`."""
    json_path, images_dir = Path(json_path), Path(images_dir)
    data = read_json(json_path)
    _require(data, ("images", "annotations"), "the top level", json_path)
    if not isinstance(data["images"], list) or not isinstance(data["annotations"], list):
        raise DessamError(f"{json_path}: 'images' and 'annotations' must be lists; see the COCO format")

    records: list[ImageRecord] = []
    index: dict[int, int] = {}
    for img in data["images"]:
        record = _image_record(img, json_path, images_dir, index)
        index[record.id] = len(records)
        records.append(record)

    boxes: list[list[np.ndarray]] = [[] for _ in records]
    clipped = dropped = crowd = 0
    for ann in data["annotations"]:
        _require(ann, ("image_id", "bbox"), "an entry of 'annotations'", json_path)
        if ann["image_id"] not in index:
            raise DessamError(
                f"{json_path}: annotation {ann.get('id')} refers to unknown image id {ann['image_id']}; "
                "fix the image_id or add the image"
            )
        bbox = parse_bbox(ann, json_path)
        if ann.get("iscrowd", 0):
            crowd += 1
            continue
        i = index[ann["image_id"]]
        rec = records[i]
        box, was_clipped = clip_box(bbox, rec.height, rec.width)
        if box[2] <= box[0] or box[3] <= box[1]:
            dropped += 1
            continue
        clipped += was_clipped
        boxes[i].append(box)
        rec.annotation_ids.append(int(ann.get("id", -1)))
        rec.segmentations.append(_segmentation_or_none(ann))
    for rec, rec_boxes in zip(records, boxes):
        if rec_boxes:
            rec.boxes = np.stack(rec_boxes).astype(np.float32)

    categories = data.get("categories") or DEFAULT_CATEGORIES
    return CocoDataset(json_path, records, categories, clipped, dropped, crowd, index)


def has_masks(record: ImageRecord) -> bool:
    """True when every kept annotation of the image has a segmentation (vacuously for none)."""
    return all(seg is not None for seg in record.segmentations)


def dataset_has_masks(dataset: CocoDataset) -> bool:
    """True when the dataset has annotations and every one carries a segmentation."""
    return any(len(r.segmentations) for r in dataset.images) and all(has_masks(r) for r in dataset.images)


def segmentation_to_mask(seg: Any, height: int, width: int, where: str = "<segmentation>") -> np.ndarray:
    """Any COCO segmentation (polygons, RLE with list or string counts) -> bool (H, W)."""
    if isinstance(seg, list):
        polygons = [p for p in seg if isinstance(p, (list, tuple)) and len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects([list(map(float, p)) for p in polygons], height, width))
    elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if [int(v) for v in seg["size"]] != [height, width]:
            raise DessamError(
                f"{where}: RLE size {seg['size']} differs from the image size {[height, width]}; "
                "re-export the masks at the image size"
            )
        rle = mask_utils.frPyObjects(seg, height, width) if isinstance(seg["counts"], list) else seg
    else:
        raise DessamError(f"{where}: unsupported segmentation {str(seg)[:60]!r}; use polygons or RLE")
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword notice
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def record_masks(record: ImageRecord) -> np.ndarray:
    """Masks of the kept annotations as bool (N, H, W)."""
    if not has_masks(record):
        raise DessamError(
            f"{record.file_name}: the annotations of this image have no segmentation; "
            "use an annotation file with masks (RLE or polygons)"
        )
    out = np.zeros((len(record.segmentations), record.height, record.width), dtype=bool)
    for k, (seg, ann_id) in enumerate(zip(record.segmentations, record.annotation_ids)):
        out[k] = segmentation_to_mask(seg, record.height, record.width, f"{record.file_name} annotation {ann_id}")
    return out


def record_label_map(record: ImageRecord) -> np.ndarray:
    """Instance label map (H, W), 0 = background, label k+1 = k-th annotation; later ones paint over."""
    masks = record_masks(record)
    dtype = np.uint16 if len(masks) < 2**16 else np.uint32
    labels = np.zeros((record.height, record.width), dtype=dtype)
    for k, m in enumerate(masks):
        labels[m] = k + 1
    return labels


def mask_to_rle(mask: np.ndarray) -> dict:
    """bool (H, W) -> compressed COCO RLE with ``counts`` as str (JSON-serialisable)."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def crop_to_rle(crop: np.ndarray, origin: tuple, shape: tuple) -> dict:
    """The compressed COCO RLE of a mask of `shape` that is `crop` placed at `origin` (row, column)
    and empty elsewhere, the same as `mask_to_rle` of the full mask, computed without building it:
    the cost grows with the crop, not with the image."""
    height, width = (int(v) for v in shape)
    y0, x0 = (int(v) for v in origin)
    columns = np.zeros((crop.shape[1], crop.shape[0] + 2), dtype=np.int8)  # COCO runs go down the columns
    columns[:, 1:-1] = np.asarray(crop, dtype=bool).T
    steps = np.diff(columns, axis=1)
    start_col, start_row = np.nonzero(steps == 1)
    _, end_row = np.nonzero(steps == -1)  # the same columns in the same order: each run starts, then ends
    first = x0 * height + y0
    starts = first + start_col * height + start_row
    ends = first + start_col * height + end_row
    edges = np.empty(2 * len(starts), dtype=np.int64)
    edges[0::2], edges[1::2] = starts, ends
    if len(edges):  # a run that reaches the bottom and one from the top of the next column are one run
        joined = np.nonzero(edges[2::2] == edges[1:-1:2])[0]
        edges = np.delete(edges, np.concatenate([2 * joined + 1, 2 * joined + 2]))
    counts = np.diff(np.concatenate([[0], edges, [height * width]])).tolist()
    if len(counts) > 1 and counts[-1] == 0:
        counts.pop()  # pycocotools ends on the last run
    rle = mask_utils.frPyObjects({"counts": counts, "size": [height, width]}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict) -> np.ndarray:
    """COCO RLE (str, bytes or list counts) -> bool (H, W)."""
    height, width = (int(v) for v in rle["size"])
    return segmentation_to_mask(rle, height, width)


def label_map_to_annotations(
    labels: np.ndarray,
    image_id: int,
    first_ann_id: int = 1,
    category_id: int = 1,
    with_masks: bool = True,
) -> list[dict]:
    """One COCO annotation per non-zero label (ascending label order)."""
    from scipy import ndimage

    labels = np.asarray(labels)
    ids, dense = np.unique(labels, return_inverse=True)
    dense = dense.reshape(labels.shape)
    if ids.size and ids[0] == 0:
        ids = ids[1:]
    else:
        dense = dense + 1  # no background present: shift so that 0 stays unused
    areas = np.bincount(dense.ravel(), minlength=ids.size + 1)[1:]
    annotations = []
    for k, sl in enumerate(ndimage.find_objects(dense)):
        if sl is None:
            continue
        y, x = sl
        ann = {
            "id": first_ann_id + len(annotations),
            "image_id": image_id,
            "category_id": category_id,
            "bbox": [int(x.start), int(y.start), int(x.stop - x.start), int(y.stop - y.start)],
            "area": int(areas[k]),
            "iscrowd": 0,
        }
        if with_masks:
            mask = np.zeros(labels.shape, dtype=bool)
            mask[sl] = dense[sl] == k + 1
            ann["segmentation"] = mask_to_rle(mask)
        annotations.append(ann)
    return annotations


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, bytes):
        return obj.decode("ascii")
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_coco(
    path: str | os.PathLike,
    images: list[dict],
    annotations: list[dict],
    categories: Optional[list[dict]] = None,
) -> Path:
    """Write a COCO instance file atomically (default category: nucleus, id 1)."""
    doc = {"images": images, "annotations": annotations, "categories": categories or DEFAULT_CATEGORIES}
    return write_text_atomic(path, json.dumps(doc, default=_json_default, separators=(",", ":")))


def read_record_image(record: ImageRecord) -> np.ndarray:
    """The record's image (uint8 RGB), refused if its size differs from the annotation file's."""
    from .images import read_image

    image = read_image(record.path)
    if image.shape[:2] != (record.height, record.width):
        raise DessamError(
            f"{record.path}: image is {image.shape[1]}x{image.shape[0]} but the annotation file says "
            f"{record.width}x{record.height}; fix width/height in the JSON"
        )
    return image
