"""Converters of instance maps and of datasets that ship them: label images, MATLAB .mat, NumPy .npy,
the DSB 2018 folders and Aperio ImageScope XML (see `dessam.data.convert`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from ..errors import DessamError
from .aperio_xml import rasterise, read_aperio_xml
from .coco import label_map_to_annotations
from .converted import Collected, ConvertSummary, from_label_maps, match_image, relative_name, source_files
from .dsb_folders import dsb_images, dsb_label_map
from .images import image_shape, read_image_raw


MAT_KEY = "inst_map"   # the variable a .mat file holds its instance map under, unless --mat-key says


def from_labels(src: Path, images_dir: Path, index: dict, out: Collected, summary: ConvertSummary, label_suffix: str = "",
            **_):
    files = source_files(src, (".png", ".tif", ".tiff"))

    label_suffix = label_suffix or ""

    def stem_of(p: Path) -> str:
        return p.stem[: -len(label_suffix)] if label_suffix and p.stem.endswith(label_suffix) else p.stem

    from_label_maps(files, read_image_raw, stem_of, index, images_dir, out)


def from_mat(src: Path, images_dir: Path, index: dict, out: Collected, summary: ConvertSummary, mat_key: str = MAT_KEY,
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

    from_label_maps(source_files(src, (".mat",)), read, lambda p: p.stem, index, images_dir, out)


def read_npy_labels(path: Path) -> np.ndarray:
    """One instance-label array from a .npy file (never unpickled)."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DessamError(f"{path}: cannot read as a .npy array ({exc}); save the label map with numpy.save") from None


def from_npy(src: Path, images_dir: Path, index: dict, out: Collected, summary: ConvertSummary, **_):
    from_label_maps(source_files(src, (".npy",)), read_npy_labels, lambda p: p.stem, index, images_dir, out)


def from_dsb(src: Path, images_dir: Path, index: Optional[dict], out: Collected, summary: ConvertSummary, **_):
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


def from_aperio_xml(src: Path, images_dir: Path, index: dict, out: Collected, summary: ConvertSummary, **_):
    sizes = set()
    for path in tqdm(source_files(src, (".xml",)), desc="converting Aperio XML", unit="file", disable=None):
        image_path = match_image(path, path.stem, index, images_dir)
        regions = read_aperio_xml(path)
        if regions.pixel_size_um:
            sizes.add(round(regions.pixel_size_um, 4))
        if regions.skipped:
            summary.notes.append(f"{path.name}: {regions.skipped} regions of fewer than 3 vertices skipped")
        labels = rasterise(regions.polygons, *image_shape(image_path))
        image_id = out.add_image(relative_name(image_path, images_dir), *labels.shape)
        out.annotations.extend(label_map_to_annotations(labels, image_id, first_ann_id=len(out.annotations) + 1))
    if sizes:
        stated = ", ".join(f"{size:g}" for size in sorted(sizes))
        summary.notes.append(f"the XML files state a pixel size of {stated} um/px: pass --pixel-size to train and "
                             "predict at that scale")
