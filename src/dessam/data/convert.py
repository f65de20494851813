"""Convert other annotation formats to COCO (RLE masks where the source has shapes).

`convert(fmt, src, images_dir, out_json, **options)`; formats:

- ``labels``: a folder of instance-label images (PNG or TIFF, 8/16/32-bit; 0 = background, one
  id per nucleus; RGB label images are read as one instance per colour, black = background).
  Matched to images by file stem; option ``label_suffix`` (e.g. ``"_label"``) is removed from the
  label stem first.
- ``labelme``: a folder of labelme JSON files; polygons and circles become masks, rectangles
  become boxes without masks; other shape types are skipped and counted.
- ``mat``: a folder of MATLAB ``.mat`` files holding an instance-label array under ``mat_key``
  (default ``inst_map``); matched to images by stem.
- ``npy``: a folder of NumPy ``.npy`` files, each one 2-D instance-label array (CoNSeP's and
  HoVer-Net's ``inst/`` folders); matched to images by stem. Files are read without pickles.
- ``voc``: a folder of Pascal VOC XML files (boxes only). VOC pixel indices are 1-based and
  inclusive, so ``xmin`` becomes ``x = xmin - 1`` and ``w = xmax - xmin + 1``.
- ``yolo``: a folder of YOLO ``.txt`` files, one object per line: ``class cx cy w h`` normalised
  to 0..1 (boxes only); segmentation lines ``class x1 y1 x2 y2 ...`` become polygon masks.
- ``coco``: a COCO file; polygon or uncompressed-RLE segmentations become compressed RLE.
- ``geojson``: a folder of GeoJSON files exported from QuPath (or one file), one per image,
  matched by file stem (``NAME.geojson``, ``NAME.svs.geojson``, ``NAME.geojson.gz``); polygons
  become masks, rectangles boxes (see `dessam.data.qupath_geojson`).
- ``csv``: box tables, one per image or with an image column (see `dessam.data.box_table`).
- ``dsb``: the Data Science Bowl 2018 layout, one folder per image with ``images/`` and ``masks/``
  (one binary PNG per nucleus; see `dessam.data.dsb_folders`). The images are inside the source
  folder, so ``images_dir`` may be that folder (the default) or any folder above it.
- ``aperio-xml``: Aperio ImageScope XML files of nucleus polygons (MoNuSeg's format; see
  `dessam.data.aperio_xml`), matched to images by file stem; the pixel size they state is reported.

With ``geojson`` and ``csv`` the images may be whole slides (`dessam.data.slide.is_slide`): then
the annotated parts are cut out as training tiles (see `dessam.data.slide_tiles`) into
``tiles_dir`` (default: FILE_tiles beside the output FILE.json), whose file names the COCO file
lists; options ``tile_size`` (default 512) and ``pixel_size_um`` (default: level 0).

Option ``classes`` (list of names; labelme, voc) keeps only those object names; for yolo it is a
list of class indices. Everything kept is written as the single category ``nucleus``.
Only images that have an annotation file are written. Outputs are sorted by file name, so a
conversion is reproducible.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from tqdm import tqdm

from ..errors import DessamError
from .coco import (
    escapes_folder,
    label_map_to_annotations,
    mask_to_rle,
    read_json,
    segmentation_to_mask,
    write_coco,
)
from .aperio_xml import rasterise, read_aperio_xml
from .box_table import read_box_table
from .dsb_folders import dsb_images, dsb_label_map
from .images import IMAGE_SUFFIXES, image_shape, read_image_raw
from .qupath_geojson import read_qupath_geojson
from .slide import SLIDE_SUFFIXES, is_slide
from .slide_tiles import check_slide, cut_training_tiles

FORMATS = ("labels", "labelme", "mat", "npy", "voc", "yolo", "coco", "geojson", "csv", "dsb", "aperio-xml")
_UNINDEXED = ("coco", "dsb")  # formats whose annotations name their images themselves
_SLIDE_FORMATS = ("geojson", "csv")  # formats whose images may be whole slides
TILE_SIZE = 512  # side of the training tiles cut from slides (`dessam convert --tile-size`)
MAT_KEY = "inst_map"   # the variable a .mat file holds its instance map under, unless --mat-key says


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
class _Collected:
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


def _index_images(images_dir: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> dict[str, Path]:
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


def _source_files(src: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise DessamError(f"{src}: annotation source not found; pass a file or a folder")
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise DessamError(f"{src}: no {'/'.join(suffixes)} files found; check the folder and --from format")
    return files


def _match(ann_path: Path, stem: str, index: dict[str, Path], images_dir: Path) -> Path:
    if stem not in index:
        raise DessamError(
            f"{ann_path}: no image with stem {stem!r} in {images_dir}; add the image or remove the annotation file"
        )
    return index[stem]


def _rel(path: Path, images_dir: Path) -> str:
    return path.relative_to(images_dir).as_posix()


def _check_size(ann_path: Path, image_path: Path, ann_hw: tuple[int, int], image_hw: tuple[int, int]) -> None:
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


def _from_label_maps(files, read: Callable[[Path], np.ndarray], stem_of, index, images_dir, out: _Collected):
    for path in tqdm(files, desc="converting label maps", unit="file", disable=None):
        image_path = _match(path, stem_of(path), index, images_dir)
        labels = as_label_map(read(path), path)
        _check_size(path, image_path, labels.shape, image_shape(image_path))
        image_id = out.add_image(_rel(image_path, images_dir), *labels.shape)
        for ann in label_map_to_annotations(labels, image_id, first_ann_id=len(out.annotations) + 1):
            out.annotations.append(ann)


def _labels(src: Path, images_dir: Path, index: dict, out: _Collected, summary: ConvertSummary, label_suffix: str = "",
            **_):
    files = _source_files(src, (".png", ".tif", ".tiff"))

    label_suffix = label_suffix or ""

    def stem_of(p: Path) -> str:
        return p.stem[: -len(label_suffix)] if label_suffix and p.stem.endswith(label_suffix) else p.stem

    _from_label_maps(files, read_image_raw, stem_of, index, images_dir, out)


def _mat(src: Path, images_dir: Path, index: dict, out: _Collected, summary: ConvertSummary, mat_key: str = MAT_KEY,
         **_):
    from scipy import io as sio

    mat_key = mat_key or MAT_KEY

    def read(path: Path) -> np.ndarray:
        try:
            data = sio.loadmat(path, variable_names=[mat_key])
        except NotImplementedError as exc:  # MATLAB v7.3 is HDF5
            raise DessamError(f"{path}: MATLAB v7.3 files are not supported; save with -v7 in MATLAB") from exc
        except Exception as exc:
            raise DessamError(f"{path}: cannot read .mat file ({exc}); check the file") from exc
        if mat_key not in data:
            keys = [name for name, _, _ in sio.whosmat(path)]
            raise DessamError(f"{path}: no variable {mat_key!r} (found {keys}); pass the right one with --mat-key")
        return data[mat_key]

    _from_label_maps(_source_files(src, (".mat",)), read, lambda p: p.stem, index, images_dir, out)


def read_npy_labels(path: Path) -> np.ndarray:
    """One instance-label array from a .npy file (never unpickled)."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DessamError(f"{path}: cannot read as a .npy array ({exc}); save the label map with numpy.save") from None


def _npy(src: Path, images_dir: Path, index: dict, out: _Collected, summary: ConvertSummary, **_):
    _from_label_maps(_source_files(src, (".npy",)), read_npy_labels, lambda p: p.stem, index, images_dir, out)


def _mask_annotation(mask: np.ndarray) -> tuple[list[float], dict, int]:
    """bool mask -> (bbox x, y, w, h of its pixels, RLE, area); area 0 for an empty mask."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return [], {}, 0
    bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    return bbox, mask_to_rle(mask), int(ys.size)


def _add_polygon(out: _Collected, image_id: int, flat: list[float], hw: tuple[int, int], summary, where: str):
    bbox, rle, area = _mask_annotation(segmentation_to_mask([list(flat)], *hw))
    if area == 0:
        summary.notes.append(f"{where}: polygon covers no pixel, skipped")
    else:
        out.add(image_id, bbox, rle, area)


def _circle(points: list) -> list[float]:
    (cx, cy), (px, py) = points[:2]
    r = float(np.hypot(px - cx, py - cy))
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1).ravel().tolist()


def _labelme(src: Path, images_dir: Path, index: dict, out: _Collected, summary: ConvertSummary, classes=None, **_):
    for path in tqdm(_source_files(src, (".json",)), desc="converting labelme", unit="file", disable=None):
        doc = read_json(path)
        if not isinstance(doc, dict) or "shapes" not in doc:
            raise DessamError(f"{path}: not a labelme file (no 'shapes'); check --from")
        stem = Path(str(doc.get("imagePath") or path.stem).replace("\\", "/")).stem
        image_path = _match(path, stem if stem in index else path.stem, index, images_dir)
        hw = image_shape(image_path)
        if "imageHeight" in doc and "imageWidth" in doc:
            _check_size(path, image_path, (int(doc["imageHeight"]), int(doc["imageWidth"])), hw)
        image_id = out.add_image(_rel(image_path, images_dir), *hw)
        for k, shape in enumerate(doc["shapes"]):
            if classes is not None and shape.get("label") not in classes:
                continue
            kind, pts = shape.get("shape_type") or "polygon", shape.get("points") or []
            where = f"{path.name} shape {k}"
            if kind == "polygon" and len(pts) >= 3:
                _add_polygon(out, image_id, np.asarray(pts, float).ravel().tolist(), hw, summary, where)
            elif kind == "circle" and len(pts) >= 2:
                _add_polygon(out, image_id, _circle(pts), hw, summary, where)
            elif kind == "rectangle" and len(pts) >= 2:
                (x1, y1), (x2, y2) = np.min(pts[:2], axis=0), np.max(pts[:2], axis=0)
                out.add(image_id, [x1, y1, x2 - x1, y2 - y1])
            else:
                summary.notes.append(f"{where}: shape type {kind!r} with {len(pts)} points skipped")


def _voc(src: Path, images_dir: Path, index: dict, out: _Collected, summary: ConvertSummary, classes=None, **_):
    for path in tqdm(_source_files(src, (".xml",)), desc="converting VOC", unit="file", disable=None):
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as exc:
            raise DessamError(f"{path}: invalid XML ({exc}); fix the file") from exc
        stem = Path(root.findtext("filename") or path.stem).stem
        image_path = _match(path, stem if stem in index else path.stem, index, images_dir)
        hw = image_shape(image_path)
        size = root.find("size")
        if size is not None and size.findtext("width") and size.findtext("height"):
            _check_size(path, image_path, (int(float(size.findtext("height"))), int(float(size.findtext("width")))), hw)
        image_id = out.add_image(_rel(image_path, images_dir), *hw)
        for obj in root.iter("object"):
            if classes is not None and obj.findtext("name") not in classes:
                continue
            box = obj.find("bndbox")
            try:
                xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (AttributeError, TypeError, ValueError) as exc:
                raise DessamError(f"{path}: an object lacks a numeric bndbox; fix the file") from exc
            out.add(image_id, [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1])


def _yolo(src: Path, images_dir: Path, index: dict, out: _Collected, summary: ConvertSummary, classes=None, **_):
    keep = None if classes is None else {int(c) for c in classes}
    for path in tqdm(_source_files(src, (".txt",)), desc="converting YOLO", unit="file", disable=None):
        if path.name == "classes.txt":
            continue
        image_path = _match(path, path.stem, index, images_dir)
        h, w = image_shape(image_path)
        image_id = out.add_image(_rel(image_path, images_dir), h, w)
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
                _add_polygon(out, image_id, xy.ravel().tolist(), (h, w), summary, f"{path.name} line {line_no}")
            else:
                raise DessamError(
                    f"{path}: line {line_no} has {len(values)} numbers; expected 'class cx cy w h' "
                    "or 'class x1 y1 x2 y2 x3 y3 ...'"
                )


def _coco(src: Path, images_dir: Path, index: Optional[dict], out: _Collected, summary: ConvertSummary, **_):
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
            bbox, rle, area = _mask_annotation(segmentation_to_mask(seg, *hw, where=f"{src} annotation {ann.get('id')}"))
            if area == 0 and "bbox" not in ann:
                summary.notes.append(f"annotation {ann.get('id')}: empty segmentation and no bbox, skipped")
                continue
            out.add(image_id, ann.get("bbox", bbox), rle if area else None, area)
        else:
            out.add(image_id, ann["bbox"], None, ann.get("area"))


def _annotation_stem(path: Path) -> str:
    """The image stem an annotation file names: NAME of NAME.geojson, NAME.svs.geojson, NAME.geojson.gz."""
    name = path.name
    for suffix in (".gz", ".geojson", ".json", ".csv"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return Path(name).stem if Path(name).suffix.lower() in IMAGE_SUFFIXES + SLIDE_SUFFIXES else name


def _add_shapes(targets: list, images_dir: Path, out: _Collected, summary: ConvertSummary, out_json: Path,
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
            image_id = out.add_image(_rel(image_path, images_dir), *hw)
            for shape in shapes:
                x1, y1, x2, y2 = shape.box
                if shape.polygons is None:
                    out.add(image_id, [x1, y1, x2 - x1, y2 - y1])
                    continue
                bbox, rle, area = _mask_annotation(shape.mask(*hw))
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
                    out.add(image_id, *_mask_annotation(annotation.mask))
    summary.sources = len(targets)
    summary.notes.append(f"tiles written to {tiles_dir}; train and validate with --images {tiles_dir}")


def _geojson(src: Path, images_dir: Path, index: dict, out: _Collected, summary: ConvertSummary, classes=None,
             **options):
    targets = []
    for path in tqdm(_source_files(src, (".geojson", ".json", ".gz")), desc="reading GeoJSON", unit="file", disable=None):
        objects = read_qupath_geojson(path, classes)
        summary.notes.extend(objects.notes(path))
        targets.append((path, _match(path, _annotation_stem(path), index, images_dir), objects.shapes, objects.regions))
    _add_shapes(targets, images_dir, out, summary, **options)


def _csv(src: Path, images_dir: Path, index: dict, out: _Collected, summary: ConvertSummary, **options):
    per_image: dict[Path, tuple[Path, list]] = {}
    for path in _source_files(src, (".csv",)):
        for stem, shapes in read_box_table(path).items():
            image_path = _match(path, stem, index, images_dir)
            per_image.setdefault(image_path, (path, []))[1].extend(shapes)
    targets = [(path, image, shapes, []) for image, (path, shapes) in sorted(per_image.items())]
    _add_shapes(targets, images_dir, out, summary, **options)


def _dsb(src: Path, images_dir: Path, index: Optional[dict], out: _Collected, summary: ConvertSummary, **_):
    root = images_dir.resolve()
    for item in tqdm(dsb_images(src), desc="converting DSB folders", unit="image", disable=None):
        try:
            file_name = item.image.resolve().relative_to(root).as_posix()
        except ValueError:
            raise DessamError(f"{item.image}: not inside --images {images_dir}; pass the DSB folder itself "
                              "(or one above it) as --images") from None
        labels = dsb_label_map(item)
        image_id = out.add_image(file_name, *labels.shape)
        out.annotations.extend(label_map_to_annotations(labels, image_id, first_ann_id=len(out.annotations) + 1))
        if not item.masks:
            summary.notes.append(f"{item.folder.name}: no masks, written as an image without nuclei")


def _aperio_xml(src: Path, images_dir: Path, index: dict, out: _Collected, summary: ConvertSummary, **_):
    sizes = set()
    for path in tqdm(_source_files(src, (".xml",)), desc="converting Aperio XML", unit="file", disable=None):
        image_path = _match(path, path.stem, index, images_dir)
        regions = read_aperio_xml(path)
        if regions.pixel_size_um:
            sizes.add(round(regions.pixel_size_um, 4))
        if regions.skipped:
            summary.notes.append(f"{path.name}: {regions.skipped} regions of fewer than 3 vertices skipped")
        labels = rasterise(regions.polygons, *image_shape(image_path))
        image_id = out.add_image(_rel(image_path, images_dir), *labels.shape)
        out.annotations.extend(label_map_to_annotations(labels, image_id, first_ann_id=len(out.annotations) + 1))
    if sizes:
        stated = ", ".join(f"{size:g}" for size in sorted(sizes))
        summary.notes.append(f"the XML files state a pixel size of {stated} um/px: pass --pixel-size to train and "
                             "predict at that scale")


_CONVERTERS = {"labels": _labels, "labelme": _labelme, "mat": _mat, "voc": _voc, "yolo": _yolo, "coco": _coco,
               "geojson": _geojson, "csv": _csv, "dsb": _dsb, "aperio-xml": _aperio_xml,
               "npy": _npy}


def convert(fmt: str, src: str | os.PathLike, images_dir: Optional[str | os.PathLike], out_json: str | os.PathLike,
            **options) -> ConvertSummary:
    """Convert annotations in format `fmt` (see module docstring) to a COCO file at `out_json`.
    `images_dir` may be None for ``dsb`` (the source folder holds the images)."""
    if fmt not in _CONVERTERS:
        raise DessamError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if images_dir is None:
        if fmt != "dsb":
            raise DessamError(f"--from {fmt} needs --images FOLDER, the folder holding the images")
        images_dir = src
    src, images_dir, out_json = Path(src), Path(images_dir), Path(out_json)
    if not src.exists():
        raise DessamError(f"{src}: annotation source not found; check the path")
    summary = ConvertSummary(out_json)
    out = _Collected()
    suffixes = IMAGE_SUFFIXES + SLIDE_SUFFIXES if fmt in _SLIDE_FORMATS else IMAGE_SUFFIXES
    index = None if fmt in _UNINDEXED else _index_images(images_dir, suffixes)
    _CONVERTERS[fmt](src, images_dir, index, out, summary, out_json=out_json, **options)
    annotated = len(out.images) if summary.sources is None else summary.sources
    if index is not None and len(index) > annotated:
        summary.notes.append(f"{len(index) - annotated} image(s) in {images_dir} have no annotation file "
                             "and were left out")
    write_coco(out_json, out.images, out.annotations)
    summary.images, summary.annotations = len(out.images), len(out.annotations)
    summary.with_masks = sum("segmentation" in a for a in out.annotations)
    return summary
