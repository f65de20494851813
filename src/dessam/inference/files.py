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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from tqdm.auto import tqdm

from ..data.images import read_image_raw, to_rgb, to_uint8
from ..errors import DessamError
from ..export import (instances_to_coco_results, summary_row, write_geojson, write_json, write_label_tiff,
                      write_measurements_csv, write_overlay_png, write_summary_csv)
from ..postprocess import Postprocess

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
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


def predict_files(model, inputs: Iterable[str], out_dir, formats=FORMATS, overwrite: bool = False,
                  pixel_size_um: Optional[float] = None, tile: Optional[bool] = None, overlap: int = 64,
                  progress: bool = True, postprocess: Optional[Postprocess] = None) -> PredictRun:
    """`model` (a `Predictor`) over every image of `inputs`, writing `formats` into `out_dir`;
    `postprocess`: how results are read (default: the model's own)."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise DessamError(f"--formats: unknown {', '.join(sorted(unknown))}; choose from {', '.join(FORMATS)}")
    paths = expand_inputs(inputs)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".dessam_write_test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise DessamError(f"{out_dir}: cannot write the output folder ({exc.strerror}); choose another --out") from None
    stems = {}
    for path in paths:
        if path.stem in stems:
            raise DessamError(f"{path}: has the same name as {stems[path.stem]}; outputs would collide, "
                              f"predict them into separate --out folders")
        stems[path.stem] = path

    run = PredictRun()
    results, summary = [], []
    previous_results, previous_rows = previous_run(out_dir) if not overwrite else ({}, {})
    for image_id, path in enumerate(tqdm(paths, desc="Predicting", unit="img", disable=not progress), start=1):
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
            prediction = model.predict(image, postprocess, tile=tile, overlap=overlap, pixel_size_um=pixel_size_um)
            rows = prediction.measurements(pixel_size_um, image=without_alpha(raw))
            if "labels" in wanted:
                write_label_tiff(wanted["labels"], prediction.labels)
            if "overlay" in wanted:
                write_overlay_png(wanted["overlay"], image, prediction.labels)
            if "geojson" in wanted:
                write_geojson(wanted["geojson"], prediction.labels, rows)
            if "csv" in wanted:
                write_measurements_csv(wanted["csv"], rows)
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
