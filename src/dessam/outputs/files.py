"""`dessam predict`: a trained model over files, folders and globs, with outputs for Fiji/QuPath/napari.

Per image (NAME = the image's file stem):
- `NAME_labels.tif`   instance label image (uint16, uint32 past 65535 nuclei) at the image's own size
- `NAME_overlay.png`  contours on the image
- `NAME.geojson`      QuPath detections (one polygon per nucleus, measurements as properties)
- `NAME_nuclei.csv`   per-nucleus measurements (scikit-image regionprops)
For the run: `coco_results.json` (COCO results: RLE masks, boxes, scores) and `summary.csv`.
An image that fails is reported and skipped; the others go on. Existing outputs are kept unless
`overwrite`; an image whose outputs are kept keeps its lines of the earlier run's
`coco_results.json` and `summary.csv`.
"""

from __future__ import annotations

import csv
import glob
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
from tqdm.auto import tqdm

from ..config import Postprocess
from ..data.images import read_image_raw, to_rgb, to_uint8
from ..data.slide import SLIDE_SUFFIXES, is_slide
from ..errors import DessamError
from ..geometry.scale import check_pixel_size
from ..geometry.tiling import check_tiling
from .slides import SlideOptions, predict_slide, slide_outputs
from .writers import (instances_to_coco_results, summary_row, write_geojson, write_json, write_label_tiff,
                      write_measurements_csv, write_overlay_png, write_summary_csv)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"} | set(SLIDE_SUFFIXES)
FORMATS = ("labels", "overlay", "geojson", "csv")


def expand_inputs(inputs: Iterable[str]) -> list:
    """Image paths from files, folders (their images, sorted) and glob patterns, without repeats."""
    found, seen = [], set()

    def add(path: Path):
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(path)

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES and not child.name.startswith("."):
                    add(child)
        elif path.is_file():
            add(path)
        elif any(ch in item for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
            images = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_SUFFIXES]
            if not images:
                raise DessamError(f"{item}: the pattern matches no image; check the pattern")
            for match in images:
                add(match)
        else:
            raise DessamError(f"{item}: no such file or folder; check the path")
    if not found:
        raise DessamError(f"{' '.join(map(str, inputs))}: no images found (PNG, JPEG, TIFF)")
    return found


def output_paths(out_dir: Path, image_path: Path) -> dict:
    stem = image_path.stem
    return {
        "labels": out_dir / f"{stem}_labels.tif",
        "overlay": out_dir / f"{stem}_overlay.png",
        "geojson": out_dir / f"{stem}.geojson",
        "csv": out_dir / f"{stem}_nuclei.csv",
    }


def previous_run(out_dir: Path) -> tuple[dict, dict]:
    """An earlier run's COCO results and summary rows in `out_dir`, by image file name, so that
    images whose outputs are kept keep their part of the run-wide files (unreadable: nothing)."""
    results, rows = {}, {}
    try:
        for result in json.loads((out_dir / "coco_results.json").read_text()):
            results.setdefault(result["file_name"], []).append(result)
    except (OSError, ValueError, TypeError, KeyError):
        results = {}
    try:
        with open(out_dir / "summary.csv", newline="", encoding="utf-8") as handle:
            rows = {row["image"]: row for row in csv.DictReader(handle)}
    except (OSError, csv.Error, KeyError):
        rows = {}
    return results, rows


def without_alpha(raw):
    """The stored pixels without an alpha channel (gray + alpha, RGBA), as `to_rgb` reads them."""
    if raw.ndim == 3 and raw.shape[2] == 2:
        return raw[:, :, 0]
    if raw.ndim == 3 and raw.shape[2] == 4:
        return raw[:, :, :3]
    return raw


@dataclass
class PredictRun:
    written: list = field(default_factory=list)
    skipped: list = field(default_factory=list)   # existing outputs kept
    failed: list = field(default_factory=list)    # (path, message)

    @property
    def exit_status(self) -> int:
        return 1 if self.failed else 0


def parse_shard(text: Optional[str]) -> Optional[tuple]:
    """"K/N" (1 <= K <= N) -> (K, N); None stays None."""
    if text is None:
        return None
    k, sep, n = str(text).partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise DessamError(f"--shard {text}: give K/N with 1 <= K <= N, e.g. --shard 3/8 (the K-th of N array jobs)")
    return int(k), int(n)


def check_options(image_size: int, paths: list, pixel_size_um: Optional[float], overlap: int,
                  slide_options: Optional[SlideOptions]) -> None:
    """The options that hold for the whole run, refused before any image is read or written (and,
    from the command line, before the model is loaded): `image_size` is the model's input size."""
    check_pixel_size(pixel_size_um)
    check_tiling(int(image_size), int(overlap))
    roi = slide_options.roi if slide_options is not None else None
    if roi is not None and isinstance(roi, str):
        from ..data.tissue import parse_roi_text  # scikit-image's filters: loaded for --roi only

        parse_roi_text(roi)
    if roi is not None and not any(is_slide(path) for path in paths):
        raise DessamError(f"--roi {roi if isinstance(roi, str) else ','.join(map(str, roi))}: applies to whole slides, "
                          f"and {paths[0]}{' and the other inputs are plain images' if len(paths) > 1 else ' is a plain image'}; "
                          "crop the image instead, or leave out --roi")


def writable_folder(out_dir, keep: bool = True) -> Path:
    """The output folder, made if needed, or a one-line error when it cannot be written; with `keep`
    False a folder made only to find that out is removed again (nothing is left before the work)."""
    out_dir = Path(out_dir)
    made = [parent for parent in [out_dir, *out_dir.parents] if not parent.exists()]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".dessam_write_test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise DessamError(f"{out_dir}: cannot write the output folder ({exc.strerror}); choose another --out") from None
    finally:
        if not keep:
            for folder in made:  # innermost first
                if folder.is_dir():
                    folder.rmdir()
    return out_dir


def _check_distinct_stems(paths: list) -> None:
    """Two inputs of the same name would write the same outputs: refuse before any work."""
    stems = {}
    for path in paths:
        if path.stem in stems:
            raise DessamError(f"{path}: has the same name as {stems[path.stem]}; outputs would collide, "
                              f"predict them into separate --out folders")
        stems[path.stem] = path


def _write_image_outputs(wanted: dict, image: np.ndarray, labels: np.ndarray, rows: list) -> None:
    """One image's label TIFF, overlay, GeoJSON and measurements, those of `wanted` (format -> path)."""
    if "labels" in wanted:
        write_label_tiff(wanted["labels"], labels)
    if "overlay" in wanted:
        write_overlay_png(wanted["overlay"], image, labels)
    if "geojson" in wanted:
        write_geojson(wanted["geojson"], labels, rows)
    if "csv" in wanted:
        write_measurements_csv(wanted["csv"], rows)


def predict_files(model, inputs: Iterable[str], out_dir, formats=FORMATS, overwrite: bool = False,
                  pixel_size_um: Optional[float] = None, tile: Optional[bool] = None, overlap: int = 64,
                  progress: bool = True, postprocess: Optional[Postprocess] = None,
                  slide_options: Optional[SlideOptions] = None, shard: Optional[tuple] = None,
                  nucleus_size: Optional[float] = None) -> PredictRun:
    """`model` (a `Predictor`) over every image of `inputs`, writing `formats` into `out_dir`;
    `postprocess`: how results are read (default: the model's own). Whole slides are streamed
    (`dessam.outputs.slides`, with `slide_options`). `shard` (K, N): only the K-th of every N
    inputs in sorted order, so that N array jobs share a list with no coordination. `nucleus_size`: the
    images' typical nucleus side in pixels, for models with `nucleus` scaling (None: estimated per image)."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise DessamError(f"--formats: unknown {', '.join(sorted(unknown))}; choose from {', '.join(FORMATS)}")
    paths = expand_inputs(inputs)
    if shard is not None:
        paths = sorted(paths)[shard[0] - 1::shard[1]]
    check_options(model.image_size, paths, pixel_size_um, overlap, slide_options)
    out_dir = writable_folder(out_dir)
    _check_distinct_stems(paths)

    run = PredictRun()
    results, summary = [], []
    previous_results, previous_rows = previous_run(out_dir) if not overwrite else ({}, {})
    for image_id, path in enumerate(tqdm(paths, desc="Predicting", unit="img", disable=not progress), start=1):
        if is_slide(path):
            options = replace(slide_options or SlideOptions(), nucleus_size=nucleus_size)
            summary.append(_predict_one_slide(model, path, out_dir, formats, overwrite, pixel_size_um, overlap,
                                              postprocess, options, run, progress))
            continue
        targets = output_paths(out_dir, path)
        wanted = {name: targets[name] for name in formats}
        if not overwrite and all(p.exists() for p in wanted.values()):
            run.skipped.append(path)
            results += [dict(result, image_id=image_id) for result in previous_results.get(path.name, [])]
            summary.append({**previous_rows.get(path.name, {"image": path.name}), "status": "kept existing outputs"})
            continue
        try:
            raw = read_image_raw(path)
            image = to_rgb(to_uint8(raw), path)
            prediction = model.predict(image, postprocess, tile=tile, overlap=overlap, pixel_size_um=pixel_size_um,
                                       nucleus_size=nucleus_size)
            rows = prediction.measurements(pixel_size_um, image=without_alpha(raw))
            _write_image_outputs(wanted, image, prediction.labels, rows)
        except DessamError as exc:
            run.failed.append((path, str(exc)))
            summary.append({"image": path.name, "status": f"failed: {exc}"})
            continue
        for result in instances_to_coco_results(image_id, prediction.instances):
            result["file_name"] = path.name
            results.append(result)
        row = summary_row(path.name, rows)
        row["status"] = "ok"
        summary.append(row)
        run.written.append(path)
    write_json(out_dir / "coco_results.json", results)
    write_summary_csv(out_dir / "summary.csv", summary)
    return run


def _predict_one_slide(model, path: Path, out_dir: Path, formats, overwrite: bool, pixel_size_um, overlap: int,
                       postprocess, options: Optional[SlideOptions], run: PredictRun, progress: bool) -> dict:
    """Stream one slide; its summary row. A slide's COCO results are left out (they would hold every
    mask of the slide in one JSON file): its GeoJSON and label image hold them."""
    options = replace(options or SlideOptions(), pixel_size_um=pixel_size_um, overlap=overlap,
                      formats=tuple(f for f in formats if f != "overlay") or ("geojson",))
    outputs = slide_outputs(out_dir, path, options.formats, options.compress_geojson)
    if not overwrite and not options.resume and all(p.exists() for p in outputs.values()):
        run.skipped.append(path)
        return {"image": path.name, "status": "kept existing outputs"}
    try:
        result = predict_slide(model, path, out_dir, options, postprocess, progress)
    except DessamError as exc:
        run.failed.append((path, str(exc)))
        return {"image": path.name, "status": f"failed: {exc}"}
    if result.note:
        print(result.note, file=sys.stderr)
    run.written.append(path)
    return {"image": path.name, "nuclei": result.nuclei, "windows": result.windows,
            "windows_run": result.windows_run, "seconds": round(result.seconds, 1), "status": "ok"}
