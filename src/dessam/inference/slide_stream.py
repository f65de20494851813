"""Whole slides, streamed: one row of windows at a time, in bounded memory, resumable.

`stream_slide(model, slide, plan, run, OUT/.NAME.parts, ...)` predicts the windows of a slide
region's `WindowPlan` (windows of the model's input size at its scale, read from the best pyramid
level by `Slide.read_scaled`) that `run` selects:

1. the windows are predicted row by row in batches, and their nuclei merged across window borders
   with the very merge of tiled prediction (`dessam.geometry.tiling`: a nucleus comes from the window
   where it lies farthest from an inner edge); a nucleus is decided as soon as no later window can
   reach it, so only the candidates of about one row of windows are ever held;
2. after each row, what it decided (the nuclei in full-resolution pixels, and the undecided
   candidates) goes to a part file in the parts folder, atomically: a run killed at any point
   continues with `resume` from its last finished row and gives the same result as an
   uninterrupted run.

`decided_nuclei(parts)` reads the nuclei back, row by row, for the slide's outputs
(`dessam.outputs.slides`). Nucleus ids follow the order in which nuclei are decided (row by row).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from ..atomic import atomic_path, write_text_atomic
from ..config import Postprocess
from ..data.nucleus import Nucleus
from ..geometry.mapping import crop_to_source
from ..geometry.tiling import Piece, unique_pieces
from ..geometry.plan import WindowPlan
from . import windowed
from .pipeline import STUDENT, student_masks

PART_FORMAT = "dessam-slide-part"


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


def decided_nuclei(parts: Path, progress: bool = False) -> Iterator[Nucleus]:
    """The nuclei of a finished stream, in the order they were decided (full-resolution pixels)."""
    for part_path in tqdm(_parts(parts), desc="writing", unit="row", disable=not progress, leave=False):
        part = _read_part(part_path)
        for nucleus_id, box, score, mask in zip(part["ids"], part["boxes"], part["scores"], part["masks"]):
            yield Nucleus(int(nucleus_id), tuple(int(v) for v in box), mask, float(score))


# ----- the run -------------------------------------------------------------------------------
def _decide(pool: list, frontier: float, plan: WindowPlan, postprocess: Postprocess, next_id: int) -> tuple:
    """(nuclei decided, pool left, next id): the merge over every undecided candidate, kept for the
    candidates no later window can reach (those ending above `frontier`)."""
    kept = set(unique_pieces(pool))
    ready, left = [], []
    for index, piece in enumerate(pool):
        if piece.bottom > frontier:
            left.append(piece)
        elif index in kept:
            ready.append(piece)
    cleaned = windowed.pieces_to_instances(ready, plan.shape).postprocessed(postprocess)
    decided = [(float(score), *crop_to_source(crop, (int(origin[0]), int(origin[1])), plan.downsample, plan.offset))
               for score, crop, origin in zip(cleaned.scores, cleaned.crops, cleaned.origins)]
    decided.sort(key=lambda item: -item[0])  # within a row: ids from the highest score
    nuclei = [Nucleus(next_id + k, box, mask, score) for k, (score, box, mask) in enumerate(decided)]
    return nuclei, left, next_id + len(nuclei)


def stream_slide(model, slide, plan: WindowPlan, run: np.ndarray, parts: Path, postprocess: Postprocess,
                 settings: dict, resume: bool = False, progress: bool = True, desc: str = "windows") -> int:
    """Predict the windows of `plan` that `run` selects, row by row, into part files in `parts`
    (continued from the last finished row with `resume` when `settings` are those of the earlier
    run); returns the number of nuclei found."""
    first_row, next_id, pool = _resume_state(parts, settings, resume)
    rows = plan.rows()
    total = sum(int(run[i]) for row in rows[first_row:] for i in row)
    bar = tqdm(total=total, desc=desc, unit="window", disable=not progress)
    found = next_id - 1
    sources = {STUDENT: windowed.MaskSource(student_masks)}

    def read(index: int) -> np.ndarray:
        window = plan.windows[index]
        return slide.read_scaled(plan.source_rect(index)[:2], (window.x1 - window.x0, window.y1 - window.y0),
                                 plan.downsample)

    def batch_instances(batch: list, images: list) -> list:
        return windowed.window_instances(model, images, postprocess, sources)

    for row_index in range(first_row, len(rows)):
        indices = [i for i in rows[row_index] if run[i]]
        for index, result in windowed.run_windows(plan, model.settings.batch_size, read, batch_instances, indices,
                                                  bar=bar):
            pool += windowed.pieces(plan.windows[index], result[STUDENT], index)
        frontier = plan.windows[rows[row_index + 1][0]].y0 if row_index + 1 < len(rows) else math.inf
        nuclei, pool, next_id = _decide(pool, frontier, plan, postprocess, next_id)
        found += len(nuclei)
        _write_part(parts / f"row_{row_index:05d}.npz", row_index, next_id, nuclei, pool)
        bar.set_postfix(nuclei=found)
    bar.close()
    return found


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
