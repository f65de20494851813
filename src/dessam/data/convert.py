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
from pathlib import Path
from typing import Optional

from ..errors import DessamError
from .coco import write_coco
from .convert_maps import from_aperio_xml, from_dsb, from_labels, from_mat, from_npy
from .convert_shapes import from_coco, from_csv, from_geojson, from_labelme, from_voc, from_yolo
from .converted import Collected, ConvertSummary, index_images
from .images import IMAGE_SUFFIXES
from .slide import SLIDE_SUFFIXES

FORMATS = ("labels", "labelme", "mat", "npy", "voc", "yolo", "coco", "geojson", "csv", "dsb", "aperio-xml")
_UNINDEXED = ("coco", "dsb")  # formats whose annotations name their images themselves
_SLIDE_FORMATS = ("geojson", "csv")  # formats whose images may be whole slides
_CONVERTERS = {"labels": from_labels, "labelme": from_labelme, "mat": from_mat, "voc": from_voc, "yolo": from_yolo,
               "coco": from_coco, "geojson": from_geojson, "csv": from_csv, "dsb": from_dsb,
               "aperio-xml": from_aperio_xml, "npy": from_npy}


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
    out = Collected()
    suffixes = IMAGE_SUFFIXES + SLIDE_SUFFIXES if fmt in _SLIDE_FORMATS else IMAGE_SUFFIXES
    index = None if fmt in _UNINDEXED else index_images(images_dir, suffixes)
    _CONVERTERS[fmt](src, images_dir, index, out, summary, out_json=out_json, **options)
    annotated = len(out.images) if summary.sources is None else summary.sources
    if index is not None and len(index) > annotated:
        summary.notes.append(f"{len(index) - annotated} image(s) in {images_dir} have no annotation file "
                             "and were left out")
    write_coco(out_json, out.images, out.annotations)
    summary.images, summary.annotations = len(out.images), len(out.annotations)
    summary.with_masks = sum("segmentation" in a for a in out.annotations)
    return summary
