"""Whole slides, streamed: one row of windows at a time, in bounded memory, resumable.

`predict_slide(model, slide.svs, OUT)`:

1. opens the slide (`dessam.data.slide`), takes its pixel size (or `--pixel-size`) and from it the
   factor that brings it to the model's scale (`dessam.scale`): windows of the model's input size
   at that scale are read from the best pyramid level (`Slide.read_scaled`);
2. cuts the region of interest (`--roi`, default the whole slide) into overlapping windows and,
   unless told otherwise, keeps those that touch the tissue/cell mask computed on a low-resolution
   level (`dessam.data.tissue`; saved as `NAME_tissue.png` for a look);
3. predicts the windows row by row in batches and merges their nuclei across window borders with
   the very merge of `dessam.inference.tiling` (a nucleus comes from the window where it lies
   farthest from an inner edge); a nucleus is decided as soon as no later window can reach it,
   so only the candidates of about one row of windows are ever held;
4. after each row, writes what it decided (the nuclei, and the undecided candidates) to a part file
   in `OUT/.NAME.parts/`, atomically: a run killed at any point continues with `--resume` from its
   last finished row and gives the same result as an uninterrupted run;
5. at the end reads the parts back and writes `NAME.geojson[.gz]` (QuPath detections, level-0
   pixels), `NAME_nuclei.csv` (measurements, in um with a pixel size) and `NAME_labels.ome.tif` (a
   tiled pyramidal uint32 label image written band by band), each to a temporary name renamed into
   place, then removes the parts. A slide's outputs are complete or absent.

Nucleus ids follow the order in which nuclei are decided (row by row); where masks overlap, the label
image paints them as `predict` does (by default the lower score wins).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm.auto import tqdm

from ..atomic import atomic_path, write_text_atomic
from ..data.label_pyramid import LabelPyramidWriter
from ..data.nucleus import Nucleus
from ..data.slide import open_slide, resolve_pixel_size
from ..data.tissue import parse_roi, select_tiles, tissue_mask, write_mask_png
from ..export_slide import GeoJSONWriter, MeasurementsCSVWriter, measure_nucleus
from ..postprocess import Postprocess, clean_crop
from .predictor import STUDENT, Predictor
from .tiling import Piece, Window, tile_windows, unique_pieces, window_pieces

SLIDE_FORMATS = ("geojson", "csv", "labels")
PART_FORMAT = "dessam-slide-part"


@dataclass
class SlideOptions:
    overlap: int = 64                       # model pixels between neighbouring windows
    roi: Optional[object] = None            # "x,y,w,h" or (x, y, w, h) in level-0 pixels; None: the whole slide
    skip_glass: bool = True                 # run only the windows that touch the tissue/cell mask
    tissue: dict = field(default_factory=dict)  # options of `dessam.data.tissue.tissue_mask`
    pixel_size_um: Optional[float] = None   # overrides the slide's own
    formats: tuple = SLIDE_FORMATS
    compress_geojson: bool = False
    resume: bool = False


@dataclass
class SlideRun:
    path: Path
    outputs: dict
    nuclei: int
    windows: int            # windows of the region
    windows_run: int        # windows that touch cells (all of them without glass skipping)
    seconds: float
    pixel_size_um: Optional[float]
    note: Optional[str] = None


def slide_outputs(out_dir: Path, slide_path: Path, formats=SLIDE_FORMATS, compress_geojson: bool = False) -> dict:
    stem = slide_path.name.split(".")[0]
    paths = {
        "geojson": out_dir / f"{stem}.geojson{'.gz' if compress_geojson else ''}",
        "csv": out_dir / f"{stem}_nuclei.csv",
        "labels": out_dir / f"{stem}_labels.ome.tif",
    }
    return {name: paths[name] for name in formats if name in paths}


@dataclass
class _Plan:
    """Where the windows are: the region in level-0 and model pixels, and the windows' rows."""

    roi: tuple              # x, y, w, h level-0
    downsample: float       # level-0 pixels per model pixel
    shape: tuple            # (H, W) of the region in model pixels
    windows: list           # `Window`s in the region's model pixels
    run: np.ndarray         # bool per window: to predict
    rows: list              # per row of windows: the indices of its windows

    def level0_rect(self, window: Window) -> tuple:
        d = self.downsample
        return (self.roi[0] + window.x0 * d, self.roi[1] + window.y0 * d, (window.x1 - window.x0) * d,
                (window.y1 - window.y0) * d)


def _plan(slide, model: Predictor, options: SlideOptions, pixel_size: Optional[float], tissue) -> _Plan:
    factor = model.scale.factor(pixel_size)
    roi = options.roi or (0, 0, *slide.dimensions)
    if isinstance(roi, str):
        roi = parse_roi(roi, slide.dimensions, str(slide.path))
    downsample = 1.0 / factor
    shape = (max(1, int(math.floor(roi[3] * factor))), max(1, int(math.floor(roi[2] * factor))))
    windows = tile_windows(shape, model.image_size, options.overlap)
    plan = _Plan(roi, downsample, shape, windows, np.ones(len(windows), bool), [])
    if tissue is not None:
        plan.run = select_tiles(tissue, [plan.level0_rect(w) for w in windows])
    starts = sorted({w.y0 for w in windows})
    plan.rows = [[i for i, w in enumerate(windows) if w.y0 == y] for y in starts]
    return plan


# ----- part files ----------------------------------------------------------------------------
def _pack(crops: list) -> tuple:
    shapes = np.array([c.shape for c in crops], dtype=np.int64).reshape(-1, 2)
    bits = np.packbits(np.concatenate([c.ravel() for c in crops]) if crops else np.zeros(0, bool))
    return shapes, bits


def _unpack(shapes: np.ndarray, bits: np.ndarray) -> list:
    flat = np.unpackbits(bits, count=int((shapes[:, 0] * shapes[:, 1]).sum())).astype(bool) if len(shapes) else []
    crops, start = [], 0
    for h, w in shapes:
        crops.append(np.asarray(flat[start:start + h * w]).reshape(h, w))
        start += h * w
    return crops


def _write_part(path: Path, row: int, next_id: int, nuclei: list, pool: list) -> None:
    shapes, bits = _pack([n.mask for n in nuclei])
    pool_shapes, pool_bits = _pack([p.crop for p in pool])
    arrays = dict(
        row=np.int64(row), next_id=np.int64(next_id),
        ids=np.array([n.id for n in nuclei], np.int64), boxes=np.array([n.box for n in nuclei], np.int64).reshape(-1, 4),
        scores=np.array([n.score for n in nuclei], np.float64), shapes=shapes, bits=bits,
        pool_margin=np.array([p.margin for p in pool], np.float64),
        pool_score=np.array([p.score for p in pool], np.float64),
        pool_window=np.array([p.window for p in pool], np.int64),
        pool_origin=np.array([p.origin for p in pool], np.int64).reshape(-1, 2),
        pool_box=np.array([p.box for p in pool], np.float64).reshape(-1, 4),
        pool_shapes=pool_shapes, pool_bits=pool_bits,
    )
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def _read_part(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        part = {key: data[key] for key in data.files}
    part["masks"] = _unpack(part["shapes"], part["bits"])
    crops = _unpack(part["pool_shapes"], part["pool_bits"])
    part["pool"] = [Piece(float(m), float(s), int(w), c, tuple(int(v) for v in o), b) for m, s, w, c, o, b in zip(
        part["pool_margin"], part["pool_score"], part["pool_window"], crops, part["pool_origin"], part["pool_box"])]
    return part


def _parts(folder: Path) -> list:
    return sorted(folder.glob("row_*.npz"))


# ----- the run -------------------------------------------------------------------------------
def _to_level0(crop: np.ndarray, origin: tuple, plan: _Plan) -> tuple:
    """(level-0 box, mask) of a crop at `origin` (row, col) in the region's model pixels (nearest)."""
    d = plan.downsample
    y0, x0 = origin
    if d == 1.0:
        box = (plan.roi[0] + x0, plan.roi[1] + y0, plan.roi[0] + x0 + crop.shape[1], plan.roi[1] + y0 + crop.shape[0])
        return box, crop
    top, left = int(math.floor(y0 * d)), int(math.floor(x0 * d))
    bottom, right = int(math.ceil((y0 + crop.shape[0]) * d)), int(math.ceil((x0 + crop.shape[1]) * d))
    rows = np.clip(np.floor(np.arange(top, bottom) / d).astype(np.int64) - y0, 0, crop.shape[0] - 1)
    cols = np.clip(np.floor(np.arange(left, right) / d).astype(np.int64) - x0, 0, crop.shape[1] - 1)
    mask = crop[np.ix_(rows, cols)]
    return (plan.roi[0] + left, plan.roi[1] + top, plan.roi[0] + right, plan.roi[1] + bottom), mask


def _decide(pool: list, frontier: float, plan: _Plan, postprocess: Postprocess, next_id: int) -> tuple:
    """(nuclei decided, pool left, next id): the merge over every undecided candidate, kept for the
    candidates no later window can reach (those ending above `frontier`)."""
    kept = set(unique_pieces(pool))
    decided, left = [], []
    for index, piece in enumerate(pool):
        if piece.bottom > frontier:
            left.append(piece)
            continue
        if index not in kept:
            continue
        if postprocess.score_threshold is not None and piece.score < postprocess.score_threshold:
            continue
        crop, y0, x0 = clean_crop(piece.crop, *piece.origin, plan.shape, postprocess)
        if not crop.size or not crop.any():
            continue
        box, mask = _to_level0(crop, (y0, x0), plan)
        decided.append((piece.score, box, mask))
    decided.sort(key=lambda item: -item[0])  # within a row: ids from the highest score
    nuclei = [Nucleus(next_id + k, box, mask, score) for k, (score, box, mask) in enumerate(decided)]
    return nuclei, left, next_id + len(nuclei)


def predict_slide(model: Predictor, path, out_dir, options: Optional[SlideOptions] = None,
                  postprocess: Optional[Postprocess] = None, progress: bool = True) -> SlideRun:
    """Predict one whole slide into `out_dir` (see the module docstring)."""
    options = options or SlideOptions()
    postprocess = postprocess or model.postprocess_settings()
    path, out_dir = Path(path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = slide_outputs(out_dir, path, options.formats, options.compress_geojson)
    start = time.perf_counter()
    with open_slide(path) as slide:
        pixel_size, note = resolve_pixel_size(slide, options.pixel_size_um)
        tissue = None
        if options.skip_glass:
            tissue = tissue_mask(slide, pixel_size_um=pixel_size, **options.tissue)
        plan = _plan(slide, model, options, pixel_size, tissue)
        stem = path.name.split(".")[0]
        if tissue is not None:
            write_mask_png(out_dir / f"{stem}_tissue.png", tissue,
                           [plan.level0_rect(w) for w, run in zip(plan.windows, plan.run) if run])
        parts = out_dir / f".{stem}.parts"
        settings = {"slide": str(path), "roi": list(plan.roi), "downsample": plan.downsample, "windows": len(plan.windows),
                    "run": int(plan.run.sum()), "model": str(model.path), "postprocess": repr(postprocess)}
        first_row, next_id, pool = _resume_state(parts, settings, options.resume)
        total = sum(int(plan.run[i]) for row in plan.rows[first_row:] for i in row)
        bar = tqdm(total=total, desc=f"{path.name}: windows", unit="window", disable=not progress)
        found = next_id - 1
        for row_index in range(first_row, len(plan.rows)):
            indices = [i for i in plan.rows[row_index] if plan.run[i]]
            for batch_start in range(0, len(indices), model.settings.batch_size):
                batch = indices[batch_start:batch_start + model.settings.batch_size]
                images = [slide.read_scaled(plan.level0_rect(plan.windows[i])[:2],
                                            (plan.windows[i].x1 - plan.windows[i].x0, plan.windows[i].y1 - plan.windows[i].y0),
                                            plan.downsample) for i in batch]
                for index, result in zip(batch, model.window_sources(images, postprocess, (STUDENT,))):
                    pool += window_pieces(plan.windows[index], result[STUDENT], index, plan.shape)
                bar.update(len(batch))
            frontier = plan.windows[plan.rows[row_index + 1][0]].y0 if row_index + 1 < len(plan.rows) else math.inf
            nuclei, pool, next_id = _decide(pool, frontier, plan, postprocess, next_id)
            found += len(nuclei)
            _write_part(parts / f"row_{row_index:05d}.npz", row_index, next_id, nuclei, pool)
            bar.set_postfix(nuclei=found)
        bar.close()
        _assemble(slide, parts, outputs, pixel_size, postprocess, progress)
    shutil.rmtree(parts, ignore_errors=True)
    return SlideRun(path, outputs, found, len(plan.windows), int(plan.run.sum()), time.perf_counter() - start,
                    pixel_size, note)


def _resume_state(parts: Path, settings: dict, resume: bool) -> tuple:
    """(first row to run, next id, undecided candidates): from the last finished row with `resume`,
    else a fresh start (earlier parts removed)."""
    record = parts / "settings.json"
    if resume and record.is_file() and json.loads(record.read_text()) == settings and _parts(parts):
        last = _read_part(_parts(parts)[-1])
        return int(last["row"]) + 1, int(last["next_id"]), last["pool"]
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    write_text_atomic(record, json.dumps(settings))
    return 0, 1, []


def _assemble(slide, parts: Path, outputs: dict, pixel_size: Optional[float], postprocess: Postprocess,
              progress: bool) -> None:
    """Write the final files from the parts, each complete or not at all."""
    writers = {}
    try:
        if "geojson" in outputs:
            writers["geojson"] = GeoJSONWriter(outputs["geojson"])
        if "csv" in outputs:
            writers["csv"] = MeasurementsCSVWriter(outputs["csv"])
        if "labels" in outputs:
            width, height = slide.dimensions
            writers["labels"] = LabelPyramidWriter(outputs["labels"], width, height, pixel_size,
                                                   overlap_winner=postprocess.overlap_winner)
        measure = "geojson" in writers or "csv" in writers
        for part_path in tqdm(_parts(parts), desc="writing", unit="row", disable=not progress, leave=False):
            part = _read_part(part_path)
            for nucleus_id, box, score, mask in zip(part["ids"], part["boxes"], part["scores"], part["masks"]):
                nucleus = Nucleus(int(nucleus_id), tuple(int(v) for v in box), mask, float(score))
                if measure:
                    x1, y1, x2, y2 = nucleus.box
                    nucleus.measurements = measure_nucleus(nucleus, slide.read_region((x1, y1), 0, (x2 - x1, y2 - y1)),
                                                           pixel_size)
                for writer in writers.values():
                    writer.add(nucleus)
    except BaseException:
        for writer in writers.values():
            writer.abort() if hasattr(writer, "abort") else writer.discard()
        raise
    for writer in writers.values():
        writer.close()
