"""Images of any size through the predictor: whole, or in overlapping windows merged without seams.

`image_instances` brings one image to the model's scale as its `WindowPlan` says (fitted whole, or
resampled and cut into windows), runs the windows through `window_instances` in batches, merges the
nuclei the windows share (`dessam.geometry.tiling`) and maps them back to the image's own pixels.

`run_windows` is the one loop over a plan's windows, batch by batch, for every caller: an image's
windows here, the windows that hold given boxes (`dessam.inference.box_masks`) and a slide's rows of
windows read from its pyramid (`dessam.inference.slide_stream`); each gives how a window is read and
what a batch of them gives.

Several mask sources can be read from one encoding and one detection per window: a `MaskSource`
gives the masks of a batch of windows prompted with boxes, either the detector's or, with
`given_boxes`, boxes given with the image (each prompted in the window where it lies farthest from
the inner edges). `predict` reads the DES-SAM student; `dessam eval --baselines` reads its baselines
too (`dessam.evaluation.sources`). With `read_if`, the sources that call the decoder are read only when
the detections of the batch pass it: a pass can end as a detection only (`Pipeline.sized_instances`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping, Optional

import numpy as np
from tqdm.auto import tqdm

from ..config import Postprocess
from ..geometry.inputs import as_rgb
from ..geometry.plan import WindowPlan
from ..geometry.tiling import unique_pieces, window_boxes, window_pieces
from .instances import Instances, rescale_instances


@dataclass(frozen=True)
class MaskSource:
    """Where masks come from: `masks(predictor, encoded, images, boxes, scores, n_images)` gives the
    `Instances` of each image of an encoded batch prompted with `boxes` (one (N, 4) array per image)
    and their `scores`: the detections, or with `given_boxes` the boxes given with the images.
    `decodes`: False for a source that needs no decoder call (filled boxes). `measures_size`: a source
    of the passes that measure an image's nucleus size (`Pipeline.sized_instances`)."""

    masks: Callable
    given_boxes: bool = False
    decodes: bool = True
    measures_size: bool = False  # with `size_threshold`: sees every detection above it, not only the read-out's


def window_instances(predictor, images: list, postprocess: Postprocess, sources: Mapping[str, MaskSource],
                     given: Optional[list] = None, n_images: Optional[int] = None,
                     read_if: Optional[Callable[[list], bool]] = None, size_threshold: Optional[float] = None) -> list:
    """Per image (each fitting one input at the model's scale), {name: raw `Instances`} of each source,
    from one encoding and one detection; `given`: per image the boxes (N, 4) that the sources with
    `given_boxes` are prompted with. Batched as the predictor's settings say. read_if(detected boxes of
    a batch, one (N, 4) array per image): when given and False, the sources that decode are not read
    for that batch (its results hold the others only). size_threshold: detect above this lower score;
    read_if and the sources that `measures_size` see those detections, the others only the ones above
    `postprocess.score_threshold`."""
    out = []
    detecting = postprocess if size_threshold is None else replace(postprocess, score_threshold=size_threshold)
    for start in range(0, len(images), predictor.settings.batch_size):
        batch = images[start:start + predictor.settings.batch_size]
        encoded = predictor.encode(batch, n_images)
        results = [{} for _ in batch]
        reading = dict(sources)
        detected = {name: source for name, source in reading.items() if not source.given_boxes}
        if detected:
            found = predictor.detect(encoded, detecting)
            if read_if is not None and not read_if([b for b, _ in found]):
                reading = {name: source for name, source in reading.items() if not source.decodes}
                detected = {name: source for name, source in reading.items() if not source.given_boxes}
            measuring = {name: source for name, source in detected.items() if source.measures_size}
            kept = {name: source for name, source in detected.items() if not source.measures_size}
            read_out = found if size_threshold is None else [above(b, s, postprocess.score_threshold) for b, s in found]
            _fill(results, measuring, predictor, encoded, batch, [b for b, _ in found], [s for _, s in found], n_images)
            _fill(results, kept, predictor, encoded, batch, [b for b, _ in read_out], [s for _, s in read_out], n_images)
        if given is not None and len(detected) < len(reading):
            boxes = [np.asarray(b, np.float32).reshape(-1, 4) for b in given[start:start + len(batch)]]
            _fill(results, {name: source for name, source in reading.items() if source.given_boxes}, predictor,
                  encoded, batch, boxes, [np.ones(len(b)) for b in boxes], n_images)
        out += results
    return out


def above(boxes: np.ndarray, scores: np.ndarray, threshold: Optional[float]) -> tuple:
    """The detections (boxes, scores) whose score is above `threshold` (None: all), as the detector
    keeps them."""
    if threshold is None:
        return boxes, scores
    keep = np.asarray(scores) > threshold
    return boxes[keep], scores[keep]


def _fill(results: list, sources: Mapping[str, MaskSource], predictor, encoded, images: list, boxes: list,
          scores: list, n_images) -> None:
    """Each source's `Instances` of every image of a batch, prompted with `boxes`."""
    for name, source in sources.items():
        for result, instances in zip(results, source.masks(predictor, encoded, images, boxes, scores, n_images)):
            result[name] = instances


def run_windows(plan: WindowPlan, batch_size: int, read: Callable[[int], np.ndarray],
                work: Callable[[list, list], list], indices: Optional[list] = None,
                on_window: Optional[Callable[[int, int], None]] = None, bar=None) -> list:
    """The windows `indices` of `plan` (default: all) in batches of `batch_size`: each batch's images,
    `read(index)` for each window, go to `work(batch, images)`, which gives one result per window.
    Returns (index, result) pairs in window order. After each batch `bar` (a tqdm) moves on and
    on_window(done, total) is called; an exception it raises stops the work there."""
    indices = list(range(len(plan.windows))) if indices is None else list(indices)
    out = []
    for batch in plan.batches(batch_size, indices):
        out += zip(batch, work(batch, [read(index) for index in batch]))
        if bar is not None:
            bar.update(len(batch))
        if on_window is not None:
            on_window(len(out), len(indices))
    return out


def window_reader(plan: WindowPlan, working: np.ndarray) -> Callable[[int], np.ndarray]:
    """Window `index` of `plan` cut from the working image (the image at the model's scale)."""
    return lambda index: working[plan.windows[index].rows, plan.windows[index].cols]


def image_instances(predictor, image: np.ndarray, sources: Mapping[str, MaskSource],
                    postprocess: Optional[Postprocess] = None, given_boxes: Optional[np.ndarray] = None,
                    tile: Optional[bool] = None, overlap: int = 64, pixel_size_um: Optional[float] = None,
                    progress: bool = False, on_window: Optional[Callable[[int, int], None]] = None,
                    nucleus_size: Optional[float] = None, plan: Optional[WindowPlan] = None,
                    read_if: Optional[Callable[[list], bool]] = None, size_threshold: Optional[float] = None) -> dict:
    """{name: raw `Instances`} of one image of any size, brought to the model's scale as `predict`
    brings it (see `dessam.geometry.plan`): resampled, then whole, or in overlapping windows whose
    nuclei are merged; `given_boxes` (image pixels) are each prompted in the window where they lie
    farthest from its inner edges. Instances come back in the image's own pixels.
    on_window(done, total): called after each batch of windows (a viewer's progress bar); an
    exception it raises stops the work there. nucleus_size: the image's typical nucleus side in pixels
    (`nucleus` scaling; None: estimated); plan: the image's `WindowPlan` when already made; read_if:
    as `window_instances` takes it, for a plan of one window (with several, each batch would decide
    alone); size_threshold: as `window_instances` takes it. The names of the sources not read are
    missing from the result."""
    postprocess = postprocess or predictor.postprocess
    image = as_rgb(image)
    plan = plan or predictor.plan(image, pixel_size_um, tile, overlap, nucleus_size, postprocess)
    if plan.fitted:
        given = None if given_boxes is None else [given_boxes]
        return window_instances(predictor, [image], postprocess, sources, given, read_if=read_if,
                                size_threshold=size_threshold)[0]
    working = plan.working(image)
    scaled = None if given_boxes is None else plan.to_working(given_boxes)
    owner = None if scaled is None else plan.owners(scaled)

    def batch_instances(batch: list, images: list) -> list:
        given = None if scaled is None else [window_boxes(scaled, owner == index, plan.windows[index]) for index in batch]
        return window_instances(predictor, images, postprocess, sources, given, n_images=len(plan.windows),
                                read_if=read_if, size_threshold=size_threshold)

    with tqdm(total=len(plan.windows), desc="tiles", unit="tile", disable=not progress or len(plan.windows) == 1) as bar:
        found = [result for _, result in run_windows(plan, predictor.settings.batch_size, window_reader(plan, working),
                                                     batch_instances, on_window=on_window, bar=bar)]
    out = {}
    for name, source in ((n, s) for n, s in sources.items() if all(n in result for result in found)):
        pairs = [(window, result[name]) for window, result in zip(plan.windows, found)]
        if source.given_boxes:
            merged = gather_given(pairs, owner, plan.shape)
        else:
            merged = merge_windows(pairs, plan.shape) if plan.tiled else pairs[0][1]
        out[name] = merged if plan.shape == image.shape[:2] else rescale_instances(merged, image.shape[:2])
    return out


def pieces(window, instances: Instances, index: int) -> list:
    """The non-empty instances of one window (in its pixels) as merge candidates in the image."""
    return window_pieces(window, instances.boxes, instances.scores, instances.crops, instances.origins, index)


def pieces_to_instances(pieces: list, shape: tuple) -> Instances:
    return Instances(np.array([p.box for p in pieces]).reshape(-1, 4), np.array([p.score for p in pieces]),
                     [p.crop for p in pieces], [p.origin for p in pieces], shape)


def merge_windows(found: list, shape: tuple) -> Instances:
    """One `Instances` of the image from `(Window, Instances in window pixels)` pairs, without
    duplicates across windows (see `dessam.geometry.tiling`); highest score first."""
    candidates = [piece for index, (window, instances) in enumerate(found) for piece in pieces(window, instances, index)]
    return pieces_to_instances([candidates[i] for i in unique_pieces(candidates)], shape).by_score()


def gather_given(pairs: list, owner: np.ndarray, shape: tuple) -> Instances:
    """The instances of given boxes, each from its own window, back in the boxes' order."""
    crops, origins, boxes, scores = [None] * len(owner), [None] * len(owner), [None] * len(owner), [None] * len(owner)
    for index, (window, instances) in enumerate(pairs):
        placed = instances.shifted(window.y0, window.x0, shape)
        for k, box_index in enumerate(np.flatnonzero(owner == index)):
            crops[box_index], origins[box_index] = placed.crops[k], tuple(placed.origins[k])
            boxes[box_index], scores[box_index] = placed.boxes[k], placed.scores[k]
    return Instances(np.array(boxes).reshape(-1, 4), np.array(scores, dtype=np.float64), crops, origins, shape)
