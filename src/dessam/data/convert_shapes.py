"""Converters of shapes: labelme, Pascal VOC, YOLO and COCO files, and QuPath GeoJSON and box tables,
whose images may be whole slides cut into training tiles (see `dessam.data.convert`)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Optional

import numpy as np
from tqdm import tqdm

from ..errors import DessamError
from .box_table import read_box_table
from .coco import escapes_folder, read_json, segmentation_to_mask
from .converted import (Collected, ConvertSummary, add_polygon, check_size, mask_annotation, match_image,
                        relative_name, source_files)
from .images import IMAGE_SUFFIXES, image_shape
from .qupath_geojson import read_qupath_geojson
from .slide import SLIDE_SUFFIXES, is_slide
from .slide_tiles import check_slide, cut_training_tiles


TILE_SIZE = 512  # side of the training tiles cut from slides (`dessam convert --tile-size`)


def circle_polygon(points: list) -> list[float]:
    (cx, cy), (px, py) = points[:2]
    r = float(np.hypot(px - cx, py - cy))
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1).ravel().tolist()


def from_labelme(src: Path, images_dir: Path, index: dict, out: Collected, summary: ConvertSummary, classes=None, **_):
    for path in tqdm(source_files(src, (".json",)), desc="converting labelme", unit="file", disable=None):
        doc = read_json(path)
        if not isinstance(doc, dict) or "shapes" not in doc:
            raise DessamError(f"{path}: not a labelme file (no 'shapes'); check --from")
        stem = Path(str(doc.get("imagePath") or path.stem).replace("\\", "/")).stem
        image_path = match_image(path, stem if stem in index else path.stem, index, images_dir)
        hw = image_shape(image_path)
        if "imageHeight" in doc and "imageWidth" in doc:
            check_size(path, image_path, (int(doc["imageHeight"]), int(doc["imageWidth"])), hw)
        image_id = out.add_image(relative_name(image_path, images_dir), *hw)
        for k, shape in enumerate(doc["shapes"]):
            if classes is not None and shape.get("label") not in classes:
                continue
            kind, pts = shape.get("shape_type") or "polygon", shape.get("points") or []
            where = f"{path.name} shape {k}"
            if kind == "polygon" and len(pts) >= 3:
                add_polygon(out, image_id, np.asarray(pts, float).ravel().tolist(), hw, summary, where)
            elif kind == "circle" and len(pts) >= 2:
                add_polygon(out, image_id, circle_polygon(pts), hw, summary, where)
            elif kind == "rectangle" and len(pts) >= 2:
                (x1, y1), (x2, y2) = np.min(pts[:2], axis=0), np.max(pts[:2], axis=0)
                out.add(image_id, [x1, y1, x2 - x1, y2 - y1])
            else:
                summary.notes.append(f"{where}: shape type {kind!r} with {len(pts)} points skipped")


def from_voc(src: Path, images_dir: Path, index: dict, out: Collected, summary: ConvertSummary, classes=None, **_):
    for path in tqdm(source_files(src, (".xml",)), desc="converting VOC", unit="file", disable=None):
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as exc:
            raise DessamError(f"{path}: invalid XML ({exc}); fix the file") from exc
        stem = Path(root.findtext("filename") or path.stem).stem
        image_path = match_image(path, stem if stem in index else path.stem, index, images_dir)
        hw = image_shape(image_path)
        size = root.find("size")
        if size is not None and size.findtext("width") and size.findtext("height"):
            check_size(path, image_path, (int(float(size.findtext("height"))), int(float(size.findtext("width")))), hw)
        image_id = out.add_image(relative_name(image_path, images_dir), *hw)
        for obj in root.iter("object"):
            if classes is not None and obj.findtext("name") not in classes:
                continue
            box = obj.find("bndbox")
            try:
                xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (AttributeError, TypeError, ValueError) as exc:
                raise DessamError(f"{path}: an object lacks a numeric bndbox; fix the file") from exc
            out.add(image_id, [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1])


def from_yolo(src: Path, images_dir: Path, index: dict, out: Collected, summary: ConvertSummary, classes=None, **_):
    keep = None if classes is None else {int(c) for c in classes}
    for path in tqdm(source_files(src, (".txt",)), desc="converting YOLO", unit="file", disable=None):
        if path.name == "classes.txt":
            continue
        image_path = match_image(path, path.stem, index, images_dir)
        h, w = image_shape(image_path)
        image_id = out.add_image(relative_name(image_path, images_dir), h, w)
        for line_no, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                values = [float(v) for v in line.split()]
            except ValueError as exc:
                raise DessamError(f"{path}: line {line_no} is not numbers; expected 'class cx cy w h'") from exc
            if keep is not None and int(values[0]) not in keep:
                continue
            if len(values) == 5:
                cx, cy, bw, bh = values[1:]
                out.add(image_id, [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h])
            elif len(values) >= 7 and len(values) % 2 == 1:
                xy = np.asarray(values[1:]).reshape(-1, 2) * [w, h]
                add_polygon(out, image_id, xy.ravel().tolist(), (h, w), summary, f"{path.name} line {line_no}")
            else:
                raise DessamError(
                    f"{path}: line {line_no} has {len(values)} numbers; expected 'class cx cy w h' "
                    "or 'class x1 y1 x2 y2 x3 y3 ...'"
                )


def from_coco(src: Path, images_dir: Path, index: Optional[dict], out: Collected, summary: ConvertSummary, **_):
    doc = read_json(src)
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not isinstance(doc.get("annotations"), list):
        raise DessamError(f"{src}: not a COCO file (needs 'images' and 'annotations' lists); check --from")
    ids: dict[Any, tuple[int, tuple[int, int]]] = {}
    for img in doc["images"]:
        if escapes_folder(str(img.get("file_name", ""))) or "id" not in img:
            raise DessamError(f"{src}: image entry {img.get('id')} has a bad id or file_name; fix the file")
        path = images_dir / img["file_name"]
        hw = image_shape(path) if not ("height" in img and "width" in img) else (int(img["height"]), int(img["width"]))
        ids[img["id"]] = (out.add_image(str(img["file_name"]), *hw), hw)
    for ann in tqdm(doc["annotations"], desc="converting COCO", unit="nucleus", disable=None):
        seg = ann.get("segmentation")
        if ann.get("image_id") not in ids or not ("bbox" in ann or seg):
            raise DessamError(f"{src}: annotation {ann.get('id')} lacks a bbox or a known image_id; fix the file")
        image_id, hw = ids[ann["image_id"]]
        if seg:
            bbox, rle, area = mask_annotation(segmentation_to_mask(seg, *hw, where=f"{src} annotation {ann.get('id')}"))
            if area == 0 and "bbox" not in ann:
                summary.notes.append(f"annotation {ann.get('id')}: empty segmentation and no bbox, skipped")
                continue
            out.add(image_id, ann.get("bbox", bbox), rle if area else None, area)
        else:
            out.add(image_id, ann["bbox"], None, ann.get("area"))


def annotation_stem(path: Path) -> str:
    """The image stem an annotation file names: NAME of NAME.geojson, NAME.svs.geojson, NAME.geojson.gz."""
    name = path.name
    for suffix in (".gz", ".geojson", ".json", ".csv"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return Path(name).stem if Path(name).suffix.lower() in IMAGE_SUFFIXES + SLIDE_SUFFIXES else name


def add_shapes(targets: list, images_dir: Path, out: Collected, summary: ConvertSummary, out_json: Path,
                tile_size: int = TILE_SIZE, pixel_size_um: Optional[float] = None, tiles_dir=None, **_):
    """Annotations (annotation file, image, shapes, regions) -> COCO, slides cut into tiles."""
    slides = [t for t in targets if is_slide(t[1])]
    if slides and len(slides) < len(targets):
        raise DessamError(f"{images_dir}: the annotations are on both whole slides ({slides[0][1].name}) and plain "
                          "images; convert them separately (slide tiles go to their own folder)")
    if not slides:
        if pixel_size_um is not None:
            raise DessamError(f"--pixel-size {pixel_size_um}: resampling is for whole slides and {images_dir} holds "
                              "plain images; leave it out")
        for ann_path, image_path, shapes, regions in targets:
            if regions:
                summary.notes.append(f"{ann_path.name}: {len(regions)} Region* annotations are only used on slides, "
                                     "skipped")
            hw = image_shape(image_path)
            image_id = out.add_image(relative_name(image_path, images_dir), *hw)
            for shape in shapes:
                x1, y1, x2, y2 = shape.box
                if shape.polygons is None:
                    out.add(image_id, [x1, y1, x2 - x1, y2 - y1])
                    continue
                bbox, rle, area = mask_annotation(shape.mask(*hw))
                if area == 0:
                    summary.notes.append(f"{shape.where}: polygon covers no pixel, skipped")
                else:
                    out.add(image_id, bbox, rle, area)
        return
    tiles_dir = Path(tiles_dir) if tiles_dir else out_json.with_name(f"{out_json.stem}_tiles")
    for _, slide_path, _, _ in targets:  # every slide readable before the first tile is written
        check_slide(slide_path, pixel_size_um)
    for ann_path, slide_path, shapes, regions in targets:
        for tile in cut_training_tiles(slide_path, shapes, regions, tiles_dir, tile_size, pixel_size_um, summary.notes):
            image_id = out.add_image(tile.file_name, tile.size, tile.size)
            for annotation in tile.annotations:
                if annotation.mask is None:
                    out.add(image_id, annotation.box)
                else:
                    out.add(image_id, *mask_annotation(annotation.mask))
    summary.sources = len(targets)
    summary.notes.append(f"tiles written to {tiles_dir}; train and validate with --images {tiles_dir}")


def from_geojson(src: Path, images_dir: Path, index: dict, out: Collected, summary: ConvertSummary, classes=None,
             **options):
    targets = []
    for path in tqdm(source_files(src, (".geojson", ".json", ".gz")), desc="reading GeoJSON", unit="file", disable=None):
        objects = read_qupath_geojson(path, classes)
        summary.notes.extend(objects.notes(path))
        targets.append((path, match_image(path, annotation_stem(path), index, images_dir), objects.shapes, objects.regions))
    add_shapes(targets, images_dir, out, summary, **options)


def from_csv(src: Path, images_dir: Path, index: dict, out: Collected, summary: ConvertSummary, **options):
    per_image: dict[Path, tuple[Path, list]] = {}
    for path in source_files(src, (".csv",)):
        for stem, shapes in read_box_table(path).items():
            image_path = match_image(path, stem, index, images_dir)
            per_image.setdefault(image_path, (path, []))[1].extend(shapes)
    targets = [(path, image, shapes, []) for image, (path, shapes) in sorted(per_image.items())]
    add_shapes(targets, images_dir, out, summary, **options)
