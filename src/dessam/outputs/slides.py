"""`dessam predict` on a whole slide: streamed, resumable, its outputs complete or absent.

`predict_slide(model, slide.svs, OUT)`:

1. opens the slide (`dessam.data.slide`), takes its pixel size (or `--pixel-size`) and from it the
   factor that brings it to the model's scale (`dessam.geometry.scale`);
2. cuts the region of interest (`--roi`, default the whole slide) into overlapping windows (its
   `WindowPlan`) and, unless told otherwise, keeps those that touch the tissue/cell mask computed on
   a low-resolution level (`dessam.data.tissue`; saved as `NAME_tissue.png` for a look);
3. streams the windows through the model row by row (`dessam.inference.slide_stream`), the decided
   nuclei going to part files in `OUT/.NAME.parts/` after each row (`--resume` continues there);
4. at the end reads the parts back and writes `NAME.geojson[.gz]` (QuPath detections, level-0
   pixels), `NAME_nuclei.csv` (measurements, in um with a pixel size) and `NAME_labels.ome.tif` (a
   tiled pyramidal uint32 label image written band by band), each to a temporary name renamed into
   place, then removes the parts. A slide's outputs are complete or absent.

Where masks overlap, the label image paints them as `predict` does (by default the lower score wins).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import Postprocess
from ..data.label_pyramid import LabelPyramidWriter
from ..data.slide import open_slide, resolve_pixel_size
from ..geometry.plan import WindowPlan
from ..inference.slide_stream import decided_nuclei, stream_slide
from .slide_writers import GeoJSONWriter, MeasurementsCSVWriter, measure_nucleus

SLIDE_FORMATS = ("geojson", "csv", "labels")


@dataclass
class SlideOptions:
    overlap: int = 64                       # model pixels between neighbouring windows
    roi: Optional[object] = None            # "x,y,w,h" or (x, y, w, h) in level-0 pixels; None: the whole slide
    skip_glass: bool = True                 # run only the windows that touch the tissue/cell mask
    tissue: dict = field(default_factory=dict)  # options of `dessam.data.tissue.tissue_mask`
    pixel_size_um: Optional[float] = None   # overrides the slide's own
    nucleus_size: Optional[float] = None    # typical nucleus side in level-0 pixels (nucleus scaling; None: estimated)
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


ESTIMATE_REGIONS = 4  # regions of the tissue read at full resolution to estimate the nucleus size


def slide_plan(slide, model, options: SlideOptions, pixel_size: Optional[float], tissue) -> tuple:
    """(the `WindowPlan` of the region of interest, a bool per window: to predict). With `nucleus`
    scaling the slide is brought to the model by its nucleus size: given, or estimated on a few regions
    of the windows to predict (`slide_nucleus_size`)."""
    from ..data.tissue import parse_roi  # scikit-image's filters: loaded for slides only

    roi = options.roi or (0, 0, *slide.dimensions)
    if isinstance(roi, str):
        roi = parse_roi(roi, slide.dimensions, str(slide.path))
    plan, run = _region_plan(roi, model.scale.factor(pixel_size), model, options, tissue)
    nucleus = options.nucleus_size
    if model.refines_size(nucleus, pixel_size):
        nucleus = slide_nucleus_size(slide, model, plan, run)
    if nucleus is not None and model.scale.mode == "nucleus":
        plan, run = _region_plan(roi, model.scale.factor(pixel_size, nucleus), model, options, tissue)
    return plan, run


def _region_plan(roi, factor: float, model, options: SlideOptions, tissue) -> tuple:
    from ..data.tissue import select_tiles

    plan = WindowPlan.for_region(roi, factor, model.image_size, options.overlap)
    run = np.ones(len(plan.windows), bool)
    if tissue is not None:
        run = select_tiles(tissue, [plan.source_rect(i) for i in range(len(plan.windows))])
    return plan, run


def slide_nucleus_size(slide, model, plan: WindowPlan, run: np.ndarray) -> Optional[float]:
    """The typical nucleus side (level-0 pixels) that the model estimates, and corrects by its detections
    (`Pipeline.nucleus_size`), on up to `ESTIMATE_REGIONS` regions of the slide, centred in windows spread
    over those to predict; None when it cannot estimate."""
    from ..geometry.scale import ESTIMATE_CROP as CROP

    chosen = np.flatnonzero(run)
    if not len(chosen):
        return None
    picks = chosen[np.linspace(0, len(chosen) - 1, min(ESTIMATE_REGIONS, len(chosen))).round().astype(int)]
    width, height = slide.dimensions
    estimates = []
    for index in picks:
        x, y, w, h = plan.source_rect(int(index))
        side = min(CROP, int(w), int(h), width, height)
        left = int(min(max(x + w / 2 - side / 2, 0), width - side))
        top = int(min(max(y + h / 2 - side / 2, 0), height - side))
        estimate = model.nucleus_size(slide.read_region((left, top), 0, (side, side)))
        if estimate is not None:
            estimates.append(estimate)
    return float(np.median(estimates)) if estimates else None


def predict_slide(model, path, out_dir, options: Optional[SlideOptions] = None,
                  postprocess: Optional[Postprocess] = None, progress: bool = True) -> SlideRun:
    """Predict one whole slide into `out_dir` (see the module docstring)."""
    from ..data.tissue import tissue_mask, write_mask_png  # scikit-image's filters: loaded for slides only

    options = options or SlideOptions()
    postprocess = postprocess or model.postprocess
    path, out_dir = Path(path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = slide_outputs(out_dir, path, options.formats, options.compress_geojson)
    start = time.perf_counter()
    with open_slide(path) as slide:
        pixel_size, note = resolve_pixel_size(slide, options.pixel_size_um)
        tissue = None
        if options.skip_glass:
            tissue = tissue_mask(slide, pixel_size_um=pixel_size, **options.tissue)
        plan, run = slide_plan(slide, model, options, pixel_size, tissue)
        stem = path.name.split(".")[0]
        if tissue is not None:
            write_mask_png(out_dir / f"{stem}_tissue.png", tissue,
                           [plan.source_rect(i) for i in range(len(plan.windows)) if run[i]])
        parts = out_dir / f".{stem}.parts"
        roi = (*plan.offset, plan.source_hw[1], plan.source_hw[0])
        settings = {"slide": str(path), "roi": list(roi), "downsample": plan.downsample, "windows": len(plan.windows),
                    "run": int(run.sum()), "model": str(model.path), "postprocess": repr(postprocess)}
        found = stream_slide(model, slide, plan, run, parts, postprocess, settings, options.resume, progress,
                             desc=f"{path.name}: windows")
        _assemble(slide, parts, outputs, pixel_size, postprocess, progress)
    shutil.rmtree(parts, ignore_errors=True)
    return SlideRun(path, outputs, found, len(plan.windows), int(run.sum()), time.perf_counter() - start,
                    pixel_size, note)


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
        for nucleus in decided_nuclei(parts, progress):
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
