"""Synthetic whole slides: Pap-stained cell groups scattered on empty glass, with exact nuclei.

A slide is mostly glass: one flat colour with sensor noise. Cell groups (a sheet of squamous
cells, sometimes with a crowded cluster, single high-grade cells, red cells and neutrophils) are
painted by the cell painters of `dessam.data.synth` into their own canvas in optical density,
and added to the glass by Beer-Lambert (``glass * exp(-OD)``), so groups have no visible edge.
Groups never overlap. Cells and nuclei have the sizes of `dessam.data.synth` (nuclei 8-16 px
across), which at the default 0.5 µm per pixel are those of real cervical cells.

The slide is written band by band (`dessam.data.pyramid_tiff`): only the groups crossing the
current band are held, so memory stays in the hundreds of megabytes whatever the slide's size.
Each drawn nucleus is passed to the caller as a `Nucleus` (level-0 box and mask) the moment its
group is drawn; `make_synthetic_slide` writes them as ground truth. The same arguments always
give the same slide.
"""

from __future__ import annotations

import csv
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from ..atomic import atomic_path
from .label_pyramid import LabelPyramidWriter
from .nucleus import Nucleus
from .pyramid_tiff import LAYOUTS, write_pyramid_tiff
from .synth import _Canvas, _cluster, _high_grade, _look, _neutrophil, _red_cell, _spread, _squamous

GROUP_RADIUS = (60.0, 220.0)  # px, the disc in which a group's cells are placed
GROUP_MARGIN = 100  # px around the disc: a squamous cell reaches up to about 80 px from its centre
NOISE_TILES = 8  # glass noise is drawn from this many precomputed tiles


@dataclass(frozen=True)
class _Group:
    index: int
    y0: int
    x0: int
    radius: float

    @property
    def size(self) -> int:
        return int(2 * (self.radius + GROUP_MARGIN))


@dataclass
class SyntheticSlide:
    """What `write_synthetic_slide` wrote."""

    path: Path
    width: int
    height: int
    pixel_size_um: float
    groups: int
    nuclei: int
    cell_fraction: float  # of the slide area inside the groups' discs

    def __str__(self) -> str:
        return (f"{self.path}: {self.width} x {self.height} px at {self.pixel_size_um} um/px, {self.groups} cell groups "
                f"covering {100 * self.cell_fraction:.1f} % of the slide, {self.nuclei} nuclei")


def _place_groups(rng: np.random.Generator, width: int, height: int, cell_fraction: float) -> list[_Group]:
    """Non-overlapping groups at random places until their discs cover `cell_fraction` of the slide."""
    target = cell_fraction * width * height
    rects = np.zeros((0, 4))  # y0, x0, y1, x1
    groups: list[_Group] = []
    covered, failures = 0.0, 0
    while covered < target and failures < 200:
        radius = rng.uniform(*GROUP_RADIUS)
        size = 2 * (radius + GROUP_MARGIN)
        if size > min(width, height):
            failures += 1
            continue
        y0, x0 = int(rng.uniform(0, height - size)), int(rng.uniform(0, width - size))
        rect = np.array([y0, x0, y0 + size, x0 + size])
        if np.any((rects[:, 0] < rect[2]) & (rect[0] < rects[:, 2]) & (rects[:, 1] < rect[3]) & (rect[1] < rects[:, 3])):
            failures += 1
            continue
        failures = 0
        rects = np.vstack([rects, rect])
        groups.append(_Group(len(groups), y0, x0, radius))
        covered += math.pi * radius**2
    return sorted(groups, key=lambda g: (g.y0, g.x0))


def _draw_group(rng: np.random.Generator, look, group: _Group) -> tuple[np.ndarray, np.ndarray]:
    """(optical density (S, S, 3) float32, nucleus labels (S, S) uint16) of one group's canvas."""
    r, s = group.radius, group.size
    cv = _Canvas(s, s)
    centre = np.array([s / 2, s / 2])

    def inside(points):
        return [p + centre - r for p in points if np.hypot(*(p - r)) <= r]

    n_squamous = max(1, round(math.pi * r**2 / 6000))
    for p in inside(_spread(rng, 2 * n_squamous, 2 * r, 2 * r, 45 * look.scale, 0)):
        _squamous(rng, cv, look, *p, "koilocyte" if rng.random() < 0.12 else "normal")
    if rng.random() < 0.4:
        _cluster(rng, cv, look, *(centre + rng.normal(0, r / 4, 2)), int(rng.integers(8, 22)))
    for p in inside(_spread(rng, int(rng.poisson(r / 80)), 2 * r, 2 * r, 30, 0)):
        _high_grade(rng, cv, look, *p)
    for p in inside(_spread(rng, int(rng.poisson(r / 25)), 2 * r, 2 * r, 0, 0)):
        if rng.random() < 0.5:
            _red_cell(rng, cv, look, *p)
        else:
            _neutrophil(rng, cv, look, *p)
    return ndimage.gaussian_filter(cv.od, (look.blur, look.blur, 0)), cv.labels


class _Bands:
    """Level-0 bands of the slide, drawing each group when the first band reaches it."""

    def __init__(self, seed: int, width: int, height: int, tile: int, groups: list[_Group], look,
                 on_nucleus: Optional[Callable[[Nucleus], None]]):
        self.seed, self.width, self.height, self.tile = seed, width, height, tile
        self.groups, self.look, self.on_nucleus = groups, look, on_nucleus
        self.glass = np.asarray(look.stains.background, np.float32)
        noise = np.random.default_rng([seed, 1]).normal(0, look.noise, (NOISE_TILES, tile, tile, 3))
        self.noise_tiles = np.clip(np.rint(self.glass + noise), 0, 255).astype(np.uint8)
        self.nuclei = 0

    def _drawn(self, group: _Group):
        od, labels = _draw_group(np.random.default_rng([self.seed, 2, group.index]), self.look, group)
        for nucleus in Nucleus.from_labels(labels, group.x0, group.y0, first_id=self.nuclei + 1):
            if self.on_nucleus is not None:
                self.on_nucleus(nucleus)
            self.nuclei += 1
        return group, od

    def _glass(self, band_index: int, rows: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 3, band_index])
        columns = -(-self.width // self.tile)
        picks = rng.integers(0, NOISE_TILES, columns)
        band = np.concatenate([self.noise_tiles[k, :rows] for k in picks], axis=1)
        return band[:, :self.width]

    def __iter__(self) -> Iterator[np.ndarray]:
        active, waiting = [], iter(self.groups)
        upcoming = next(waiting, None)
        bar = tqdm(total=self.height, desc="synthesising slide", unit="row", disable=None)
        for band_index, y0 in enumerate(range(0, self.height, self.tile)):
            y1 = min(y0 + self.tile, self.height)
            while upcoming is not None and upcoming.y0 < y1:
                active.append(self._drawn(upcoming))
                upcoming = next(waiting, None)
            active = [(g, od) for g, od in active if g.y0 + g.size > y0]
            band = self._glass(band_index, y1 - y0)
            for group, od in active:
                r0, r1 = max(y0, group.y0), min(y1, group.y0 + group.size)
                if r1 <= r0:
                    continue
                window = band[r0 - y0:r1 - y0, group.x0:group.x0 + group.size]
                noise = window.astype(np.float32) - self.glass
                stained = self.glass * np.exp(-od[r0 - group.y0:r1 - group.y0]) + noise
                window[:] = np.clip(np.rint(stained), 0, 255).astype(np.uint8)
            bar.update(y1 - y0)
            yield band
        bar.close()


def layout_for(path: str | os.PathLike) -> str:
    """"ome" for ``.ome.tif``/``.ome.tiff`` names, else "svs" (Aperio's layout, as scanners write)."""
    name = Path(path).name.lower()
    return "ome" if name.endswith((".ome.tif", ".ome.tiff")) else "svs"


def write_synthetic_slide(
    path: str | os.PathLike,
    width: int,
    height: int,
    pixel_size_um: float = 0.5,
    cell_fraction: float = 0.03,
    seed: int = 0,
    layout: Optional[str] = None,
    tile: int = 512,
    on_nucleus: Optional[Callable[[Nucleus], None]] = None,
) -> SyntheticSlide:
    """Write a synthetic pyramidal slide (see the module docstring); `on_nucleus` gets every nucleus."""
    if width < 1 or height < 1:
        raise ValueError(f"the slide size must be positive; got {width} x {height}")
    if not 0 <= cell_fraction <= 0.5:
        raise ValueError(f"the cell fraction must be between 0 and 0.5; got {cell_fraction}")
    layout = layout or layout_for(path)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
    rng = np.random.default_rng([seed, 0])
    look = _look(rng, shift=False)
    groups = _place_groups(rng, width, height, cell_fraction)
    bands = _Bands(seed, width, height, tile, groups, look, on_nucleus)
    # an OME UUID that follows from what is drawn: the same settings write the same file
    drawn = repr(("dessam synthetic slide", width, height, pixel_size_um, cell_fraction, seed, tile))
    write_pyramid_tiff(path, bands, width, height, tile=tile, layout=layout, pixel_size_um=pixel_size_um,
                       uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, drawn)))
    covered = sum(math.pi * g.radius**2 for g in groups) / (width * height)
    return SyntheticSlide(Path(path), width, height, pixel_size_um, len(groups), bands.nuclei, covered)


def truth_paths(path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """Where the ground truth of slide `path` goes, beside it: NAME_labels.ome.tif and
    NAME_boxes.csv (NAME without ``.ome``), written by `make_synthetic_slide`, and STEM.geojson,
    which ``dessam convert --from geojson`` matches to the slide by its file stem."""
    path = Path(path)
    stem = path.stem[:-4] if path.stem.lower().endswith(".ome") else path.stem
    return path.with_name(f"{stem}_labels.ome.tif"), path.with_name(f"{stem}_boxes.csv"), path.with_name(f"{path.stem}.geojson")


def make_synthetic_slide(
    path: str | os.PathLike,
    width: int,
    height: int,
    pixel_size_um: float = 0.5,
    tile: int = 512,
    on_nucleus: Optional[Callable[[Nucleus], None]] = None,
    **options,
) -> SyntheticSlide:
    """`write_synthetic_slide` (`options`: its `cell_fraction`, `seed`, `layout`) plus its ground
    truth (`truth_paths`): a pyramidal uint32 label OME-TIFF (label k = nucleus k) and a table of
    the nuclei's boxes (image, id, x1, y1, x2, y2 in level-0 pixel edges) that
    ``dessam convert --from csv`` reads."""
    labels_path, boxes_path, _ = truth_paths(path)
    boxes: list[tuple] = []

    with LabelPyramidWriter(labels_path, width, height, pixel_size_um, tile=tile) as labels:
        def keep(nucleus: Nucleus) -> None:
            labels.add(nucleus)
            boxes.append((nucleus.id, *nucleus.box))
            if on_nucleus is not None:
                on_nucleus(nucleus)

        result = write_synthetic_slide(path, width, height, pixel_size_um, tile=tile, on_nucleus=keep, **options)
    with atomic_path(boxes_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "id", "x1", "y1", "x2", "y2"])
        writer.writerows((Path(path).name, *row) for row in boxes)
    return result
