"""Synthetic Papanicolaou-stained cervical cytology with exact nucleus masks.

A scene is built in optical density (Beer-Lambert): every object adds stain absorbance and the
image is ``background * exp(-OD)``. Overlapping cytoplasm is therefore darker, like stacked cells
under the microscope. Sizes correspond to roughly 40x magnification scaled down so that a
256 x 256 field holds several cells: normal nuclei 8-16 px across, squamous cells 50-90 px.

What is drawn:
- pale, slightly uneven glass with an illumination gradient and sensor noise;
- squamous cells: translucent polygons, cyanophilic (blue-green) or eosinophilic/orangeophilic
  (pink/orange), of varying opacity, with a darker rim and occasional folds;
- normal nuclei: small round-oval, vesicular (pale inside, crisp membrane), fine chromatin,
  sometimes a nucleolus; superficial cells have small dense (pyknotic) nuclei;
- abnormal cells: koilocyte-like (enlarged dark nucleus with a perinuclear halo) and high-grade
  cells (large hyperchromatic irregular nuclei, coarse chromatin, little cytoplasm);
- clusters: crowded groups with overlapping cytoplasm and touching/overlapping nuclei;
- distractors: neutrophils (small lobed nuclei), red blood cells (no nucleus), debris, bacteria
  and mucus strands; each cell may be out of focus (its own blur).

Labelling choice: only epithelial nuclei are labelled. Neutrophil nuclei are NOT labelled, as a
person boxing squamous/epithelial nuclei would not box inflammatory cells; a detector trained on
these scenes has to learn to ignore them. Red blood cells, debris and mucus are never labelled.

Every label is the *visible* part of one nucleus: later nuclei lie on top. A nucleus is only
drawn if its own mask is one connected region of at least `MIN_NUCLEUS_PX` pixels and it leaves
every nucleus below it connected and not reduced to a sliver; otherwise it is left out of both
the image and the labels, so the two always agree.

`scene`: ``patch`` (fewer, mostly isolated cells), ``cluster`` (crowded groups; at least a fifth
of nuclei touch another), ``mixed`` (each scene is patch or cluster at random).
`shift=True` changes the stain palette, the magnification (0.7-1.4x), blur and noise, to test
generalisation to another lab or scanner.

`hard_negatives=True` adds what a detector trained on clean fields mistakes for nuclei on real
smears (none of it labelled): squames stacked on each other, whose overlaps are darker; folded cell
corners, small dense patches of cytoplasm colour; anucleate squames; clumps of nucleus-sized debris
stained like chromatin; and sheets of inflammatory cells. The pre-training corpus draws such
scenes (`generator: pap-negatives`); the demo's scenes keep the clean generator.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
from scipy import ndimage
from skimage import draw
from skimage.segmentation import find_boundaries
from tqdm import tqdm

from .coco import label_map_to_annotations, write_coco
from .images import write_png

MIN_NUCLEUS_PX = 20
MIN_VISIBLE_FRACTION = 0.4  # an occluded nucleus must keep this much of its own area
SCENES = ("patch", "cluster", "mixed")


@dataclass(frozen=True)
class Stains:
    """Optical density per unit stain (R, G, B) and the RGB of empty glass."""

    background: tuple
    hematoxylin: tuple
    cyan: tuple  # light green / cyanophilic cytoplasm
    pink: tuple  # eosinophilic cytoplasm
    orange: tuple  # orange G, keratinised cytoplasm
    blood: tuple
    nucleolus: tuple


PAP = Stains(
    background=(243, 240, 245),
    hematoxylin=(0.58, 0.74, 0.30),
    cyan=(0.60, 0.20, 0.24),
    pink=(0.08, 0.52, 0.28),
    orange=(0.05, 0.30, 0.70),
    blood=(0.08, 0.62, 0.60),
    nucleolus=(0.25, 0.80, 0.45),
)

# another laboratory: bluer-black haematoxylin, greener cytoplasm, warmer glass
SHIFTED = Stains(
    background=(236, 233, 222),
    hematoxylin=(0.78, 0.66, 0.20),
    cyan=(0.52, 0.12, 0.42),
    pink=(0.04, 0.66, 0.46),
    orange=(0.03, 0.22, 0.80),
    blood=(0.05, 0.72, 0.70),
    nucleolus=(0.30, 0.85, 0.40),
)


@dataclass(frozen=True)
class Look:
    """Per-scene imaging conditions."""

    stains: Stains
    scale: float  # magnification relative to the base sizes
    blur: float  # optical blur sigma of the whole field (px)
    noise: float  # sensor noise sigma (0-255 units)
    defocus: float  # probability that a cell is out of focus


def _jitter_stains(rng: np.random.Generator, stains: Stains, amount: float) -> Stains:
    fields = {}
    for name, value in stains.__dict__.items():
        v = np.asarray(value, dtype=np.float64)
        if name == "background":
            fields[name] = tuple(np.clip(v + rng.normal(0, 3, 3), 200, 252))
        else:
            fields[name] = tuple(v * rng.uniform(1 - amount, 1 + amount, 3))
    return replace(stains, **fields)


def _look(rng: np.random.Generator, shift: bool) -> Look:
    if shift:
        return Look(_jitter_stains(rng, SHIFTED, 0.15), rng.uniform(0.7, 1.4), rng.uniform(0.8, 1.4),
                    rng.uniform(3.0, 6.0), 0.4)
    return Look(_jitter_stains(rng, PAP, 0.06), 1.0, 0.5, 1.5, 0.25)


class _Canvas:
    """Accumulated optical density plus the nucleus label map."""

    def __init__(self, height: int, width: int):
        self.shape = (height, width)
        self.od = np.zeros((height, width, 3), np.float32)
        self.labels = np.zeros((height, width), np.uint16)
        self.boxes: dict[int, tuple[slice, slice]] = {}
        self.areas: dict[int, int] = {}

    def claim_nucleus(self, verts: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """Paint a new nucleus on top if every nucleus stays valid; return its pixels or None."""
        rr, cc = draw.polygon(verts[:, 0], verts[:, 1], self.shape)
        if rr.size < MIN_NUCLEUS_PX:
            return None
        box = (slice(rr.min(), rr.max() + 1), slice(cc.min(), cc.max() + 1))
        if not _one_region(self._mask_in(box, rr, cc)):
            return None
        trial = self.labels.copy()
        trial[rr, cc] = label = len(self.areas) + 1
        for other in np.unique(self.labels[rr, cc]):
            if other == 0:
                continue
            visible = trial[self.boxes[other]] == other
            need = max(MIN_NUCLEUS_PX, MIN_VISIBLE_FRACTION * self.areas[other])
            if visible.sum() < need or not _one_region(visible):
                return None
        self.labels = trial
        self.boxes[label], self.areas[label] = box, int(rr.size)
        return rr, cc

    @staticmethod
    def _mask_in(box: tuple[slice, slice], rr: np.ndarray, cc: np.ndarray) -> np.ndarray:
        mask = np.zeros((box[0].stop - box[0].start, box[1].stop - box[1].start), bool)
        mask[rr - box[0].start, cc - box[1].start] = True
        return mask

    def window(self, verts: np.ndarray, margin: int) -> Optional[tuple[int, int, int, int]]:
        """Canvas rectangle (y0, x0, y1, x1) around the vertices, or None if off-canvas."""
        y0 = max(int(np.floor(verts[:, 0].min())) - margin, 0)
        x0 = max(int(np.floor(verts[:, 1].min())) - margin, 0)
        y1 = min(int(np.ceil(verts[:, 0].max())) + margin + 1, self.shape[0])
        x1 = min(int(np.ceil(verts[:, 1].max())) + margin + 1, self.shape[1])
        return (y0, x0, y1, x1) if y1 > y0 and x1 > x0 else None

    def add(self, win: tuple[int, int, int, int], od: np.ndarray) -> None:
        y0, x0, y1, x1 = win
        self.od[y0:y1, x0:x1] += od


def _one_region(mask: np.ndarray) -> bool:
    return ndimage.label(mask, structure=np.ones((3, 3)))[1] == 1


def _shape(rng, cy, cx, radius, aspect=1.0, irregular=0.05, jitter=0.0, n=40) -> np.ndarray:
    """Closed outline (n, 2) of (row, col): ellipse with random low harmonics and vertex jitter."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    if jitter:  # polygon corners at uneven angles
        t = t + rng.uniform(-0.35, 0.35, n) * (2 * np.pi / n)
    r = np.ones(n)
    for k in range(2, 6):
        r += rng.normal(0, irregular / k) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    if jitter:
        r *= rng.uniform(1 - jitter, 1 + jitter, n)
    r = np.clip(r, 0.55, 1.6) * radius
    angle = rng.uniform(0, np.pi)
    x, y = r * np.cos(t), aspect * r * np.sin(t)
    rows = cy + x * np.sin(angle) + y * np.cos(angle)
    cols = cx + x * np.cos(angle) - y * np.sin(angle)
    return np.stack([rows, cols], axis=1)


def _raster(verts: np.ndarray, win: tuple[int, int, int, int]) -> np.ndarray:
    y0, x0, y1, x1 = win
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    rr, cc = draw.polygon(verts[:, 0] - y0, verts[:, 1] - x0, mask.shape)
    mask[rr, cc] = 1.0
    return mask


def _smooth_noise(rng, shape, sigma) -> np.ndarray:
    """Zero-mean unit-std Gaussian-filtered noise."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return n / (n.std() + 1e-6)


@dataclass
class _Nucleus:
    verts: np.ndarray
    density: float  # haematoxylin per pixel
    chromatin: float  # texture amplitude
    grain: float  # texture scale (px)
    vesicular: bool  # pale interior with a dark membrane
    nucleoli: int


def _nucleus(rng, cy, cx, radius, abnormal: bool) -> _Nucleus:
    if abnormal:
        verts = _shape(rng, cy, cx, radius, rng.uniform(0.7, 1.0), irregular=rng.uniform(0.12, 0.28))
        return _Nucleus(verts, rng.uniform(1.3, 2.0), rng.uniform(0.35, 0.55), rng.uniform(1.0, 1.6),
                        False, int(rng.random() < 0.3) + int(rng.random() < 0.1))
    verts = _shape(rng, cy, cx, radius, rng.uniform(0.7, 0.95), irregular=rng.uniform(0.02, 0.07))
    pyknotic = radius < 4.8
    return _Nucleus(verts, rng.uniform(1.5, 2.0) if pyknotic else rng.uniform(0.65, 0.95),
                    0.2, 0.8, not pyknotic, int(not pyknotic and rng.random() < 0.15))


def _nucleus_density(rng, nuc: _Nucleus, mask: np.ndarray, st: Stains) -> np.ndarray:
    """OD (h, w, 3) of one nucleus from its mask."""
    texture = 1 + nuc.chromatin * _smooth_noise(rng, mask.shape, nuc.grain)
    soft = ndimage.gaussian_filter(mask, 0.6)
    dens = nuc.density * soft * np.clip(texture, 0.3, None)
    if nuc.vesicular:  # dark membrane, paler centre
        inner = ndimage.binary_erosion(mask > 0, iterations=2)
        dens = dens * np.where(inner, 0.75, 1.15)
    od = dens[..., None] * np.asarray(st.hematoxylin, np.float32)
    rows, cols = np.nonzero(ndimage.binary_erosion(mask > 0, iterations=2))
    for _ in range(nuc.nucleoli if rows.size else 0):
        k = rng.integers(rows.size)
        rr, cc = draw.disk((rows[k], cols[k]), rng.uniform(0.9, 1.6), shape=mask.shape)
        od[rr, cc] += 0.6 * np.asarray(st.nucleolus, np.float32)
    return od


def _cytoplasm_density(rng, verts_mask: np.ndarray, density: float, folds: int) -> np.ndarray:
    soft = ndimage.gaussian_filter(verts_mask, 0.8)
    rim = np.clip(verts_mask - ndimage.gaussian_filter(verts_mask, 2.5), 0, 1)
    dens = density * soft * (1 + 0.18 * _smooth_noise(rng, verts_mask.shape, 4.0)) * (1 + 0.7 * rim)
    rows, cols = np.nonzero(verts_mask)
    h, w = verts_mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(folds if rows.size else 0):  # a fold: a thin darker band along a line
        k = rng.integers(rows.size)
        a = rng.uniform(0, np.pi)
        dist = np.abs((yy - rows[k]) * np.cos(a) - (xx - cols[k]) * np.sin(a))
        along = (yy - rows[k]) * np.sin(a) + (xx - cols[k]) * np.cos(a)
        half = along > 0 if rng.random() < 0.5 else np.ones_like(verts_mask, bool)
        dens += density * 1.2 * np.exp(-((dist / rng.uniform(1.0, 2.0)) ** 2)) * verts_mask * half
    return dens


def _draw_cell(rng, cv: _Canvas, look: Look, cyto: np.ndarray, cyto_od: np.ndarray,
               nucleus: Optional[_Nucleus], halo: bool = False, folds: int = 0,
               defocus: Optional[float] = None) -> None:
    """Cytoplasm polygon plus optional nucleus, blurred together when out of focus."""
    pixels = cv.claim_nucleus(nucleus.verts) if nucleus is not None else None
    win = cv.window(cyto if pixels is None else np.concatenate([cyto, nucleus.verts]), margin=6)
    if win is None:
        return
    cmask = _raster(cyto, win)
    dens = _cytoplasm_density(rng, cmask, 1.0, folds)
    od = np.zeros(cmask.shape + (3,), np.float32)
    if pixels is not None:
        nmask = np.zeros_like(cmask)
        nmask[pixels[0] - win[0], pixels[1] - win[1]] = 1.0
        if halo:  # koilocytic clearing around the nucleus
            ring = ndimage.gaussian_filter(ndimage.binary_dilation(nmask > 0, iterations=5).astype(np.float32), 1.5)
            dens = dens * (1 - 0.8 * ring)
        od += _nucleus_density(rng, nucleus, nmask, look.stains)
    od += dens[..., None] * cyto_od
    if defocus is None:
        defocus = rng.uniform(0.8, 2.0) if rng.random() < look.defocus else 0.0
    if defocus > 0:
        od = ndimage.gaussian_filter(od, (defocus, defocus, 0))
    cv.add(win, od)


def _cyto_od(rng, st: Stains, opacity: float, keratin: float = 0.3) -> np.ndarray:
    """A squamous cytoplasm colour: mostly cyanophilic, sometimes pink or orange."""
    u = rng.random()
    base = st.cyan if u < 0.6 else (st.pink if u < 0.6 + keratin * 0.8 else st.orange)
    return opacity * np.asarray(base, np.float32)


def _squamous(rng, cv: _Canvas, look: Look, cy: float, cx: float, kind: str) -> None:
    s, st = look.scale, look.stains
    radius = rng.uniform(32, 50) * s
    cyto = _shape(rng, cy, cx, radius, rng.uniform(0.65, 1.0), irregular=0.08, jitter=0.15, n=int(rng.integers(6, 10)))
    ny, nx = cy + rng.normal(0, 0.12 * radius), cx + rng.normal(0, 0.12 * radius)
    if kind == "koilocyte":
        nuc = _nucleus(rng, ny, nx, rng.uniform(7.5, 10.5) * s, abnormal=True)
        _draw_cell(rng, cv, look, cyto, _cyto_od(rng, st, rng.uniform(0.3, 0.55), 0.6), nuc, halo=True,
                   folds=int(rng.integers(0, 2)))
        return
    superficial = rng.random() < 0.35
    nuc_radius = rng.uniform(4.0, 4.7) if superficial else rng.uniform(5.0, 7.8)
    nuc = None if rng.random() < 0.04 else _nucleus(rng, ny, nx, nuc_radius * s, abnormal=False)
    od = _cyto_od(rng, st, rng.uniform(0.28, 0.6), keratin=0.7 if superficial else 0.25)
    _draw_cell(rng, cv, look, cyto, od, nuc, folds=int(rng.random() < 0.35) + int(rng.random() < 0.1))


def _high_grade(rng, cv: _Canvas, look: Look, cy: float, cx: float, nuc_radius: Optional[float] = None,
                defocus: Optional[float] = None) -> None:
    """A high-N:C cell: large irregular hyperchromatic nucleus, scant dense cytoplasm."""
    s, st = look.scale, look.stains
    r = rng.uniform(8.0, 13.0) * s if nuc_radius is None else nuc_radius
    cyto = _shape(rng, cy + rng.normal(0, 0.3 * r), cx + rng.normal(0, 0.3 * r), r * rng.uniform(1.5, 2.3),
                  rng.uniform(0.7, 1.0), irregular=0.12, n=24)
    nuc = _nucleus(rng, cy, cx, r, abnormal=True)
    _draw_cell(rng, cv, look, cyto, rng.uniform(0.4, 0.7) * np.asarray(st.cyan, np.float32), nuc, defocus=defocus)


def _cluster(rng, cv: _Canvas, look: Look, cy: float, cx: float, n: int) -> None:
    """Crowded group grown outwards: neighbours at 0.8-1.08 x the sum of radii, so many touch."""
    s = look.scale
    high_grade = rng.random() < 0.6
    lo, hi = (7.0, 11.0) if high_grade else (4.6, 7.0)
    radii = rng.uniform(lo, hi, n) * s
    centres = [np.array([cy, cx])]
    for r in radii[1:]:
        for _ in range(25):
            j = rng.integers(len(centres))
            a = rng.uniform(0, 2 * np.pi)
            p = centres[j] + (radii[j] + r) * rng.uniform(0.8, 1.08) * np.array([np.sin(a), np.cos(a)])
            if all(np.hypot(*(p - c)) >= 0.8 * (r + radii[k]) for k, c in enumerate(centres)):
                centres.append(p)
                break
    blur = rng.uniform(0.8, 1.6) if rng.random() < look.defocus else 0.0
    for k in rng.permutation(len(centres)):
        if high_grade:
            _high_grade(rng, cv, look, *centres[k], nuc_radius=radii[k], defocus=blur)
        else:  # endocervical / metaplastic group: uniform round nuclei, shared cytoplasm
            r = radii[k]
            cyto = _shape(rng, *centres[k], r * rng.uniform(1.8, 2.6), rng.uniform(0.7, 1.0), irregular=0.1, n=20)
            nuc = _nucleus(rng, *centres[k], r, abnormal=False)
            _draw_cell(rng, cv, look, cyto, rng.uniform(0.2, 0.35) * np.asarray(look.stains.cyan, np.float32),
                       nuc, defocus=blur)


def _neutrophil(rng, cv: _Canvas, look: Look, cy: float, cx: float) -> None:
    """Small faint cell with 2-4 dark lobes; drawn only where it hides no labelled nucleus."""
    s, st = look.scale, look.stains
    body = _shape(rng, cy, cx, rng.uniform(5.0, 7.0) * s, 0.9, irregular=0.05, n=16)
    win = cv.window(body, margin=4)
    if win is None or cv.labels[win[0]:win[2], win[1]:win[3]].any():
        return
    od = (_raster(body, win) * 0.18)[..., None] * np.asarray(st.pink, np.float32)
    lobes = np.zeros(od.shape[:2], np.float32)
    a = rng.uniform(0, 2 * np.pi)
    pos = np.array([cy - win[0], cx - win[1]]) - 3 * s * np.array([np.sin(a), np.cos(a)])
    for _ in range(int(rng.integers(2, 5))):
        rr, cc = draw.disk(pos, rng.uniform(1.6, 2.6) * s, shape=lobes.shape)
        lobes[rr, cc] = 1.0
        a += rng.normal(0, 0.9)
        pos = pos + 2.8 * s * np.array([np.sin(a), np.cos(a)])
    od += (1.5 * ndimage.gaussian_filter(lobes, 0.6))[..., None] * np.asarray(st.hematoxylin, np.float32)
    cv.add(win, ndimage.gaussian_filter(od, (0.5, 0.5, 0)))


def _red_cell(rng, cv: _Canvas, look: Look, cy: float, cx: float) -> None:
    """Biconcave disk: orange-red with a paler centre, no nucleus."""
    r = rng.uniform(5.5, 7.5) * look.scale
    disk = _shape(rng, cy, cx, r, rng.uniform(0.85, 1.0), irregular=0.02, n=24)
    win = cv.window(disk, margin=3)
    if win is None:
        return
    yy, xx = np.mgrid[win[0]:win[2], win[1]:win[3]]
    pallor = 1 - 0.4 * np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (0.45 * r) ** 2))
    dens = ndimage.gaussian_filter(_raster(disk, win), 0.7) * pallor * rng.uniform(0.5, 0.8)
    cv.add(win, dens[..., None] * np.asarray(look.stains.blood, np.float32))


def _mucus(rng, cv: _Canvas, look: Look) -> None:
    """A long faint wavy strand across the field."""
    h, w = cv.shape
    lines = np.zeros(cv.shape, np.float32)
    p, a = np.array([rng.uniform(0, h), rng.uniform(0, w)]), rng.uniform(0, 2 * np.pi)
    for _ in range(40):
        q = p + 12 * np.array([np.sin(a), np.cos(a)])
        rr, cc = draw.line(*np.round(p).astype(int), *np.round(q).astype(int))
        ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        lines[rr[ok], cc[ok]] = 1.0
        p, a = q, a + rng.normal(0, 0.25)
    band = ndimage.gaussian_filter(lines, rng.uniform(2.5, 5.0))
    band *= rng.uniform(0.12, 0.25) / (band.max() + 1e-6)
    colour = look.stains.cyan if rng.random() < 0.6 else look.stains.pink
    cv.add((0, 0, h, w), band[..., None] * np.asarray(colour, np.float32))


def _debris(rng, cv: _Canvas, look: Look) -> None:
    """Small dark irregular specks and a dusting of bacteria."""
    h, w = cv.shape
    dens = np.zeros(cv.shape, np.float32)
    for _ in range(int(rng.integers(0, 6))):
        speck = _shape(rng, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1.0, 3.5), 0.7, irregular=0.3, n=12)
        rr, cc = draw.polygon(speck[:, 0], speck[:, 1], cv.shape)
        dens[rr, cc] = rng.uniform(0.5, 1.2)
    if rng.random() < 0.4:  # bacteria around a point
        n = int(rng.integers(30, 150))
        centre = np.array([rng.uniform(0, h), rng.uniform(0, w)])
        pts = np.round(centre + rng.normal(0, rng.uniform(15, 50), (n, 2))).astype(int)
        ok = (pts[:, 0] >= 0) & (pts[:, 0] < h) & (pts[:, 1] >= 0) & (pts[:, 1] < w)
        dens[pts[ok, 0], pts[ok, 1]] += 0.7
    dens = ndimage.gaussian_filter(dens, 0.6)
    cv.add((0, 0, h, w), dens[..., None] * np.asarray(look.stains.hematoxylin, np.float32))


def _stacked_squames(rng, cv: _Canvas, look: Look, cy: float, cx: float) -> None:
    """Two or three squames lying on each other, one of them without a nucleus: where they overlap the
    cytoplasm is darker (optical densities add), and a fold may cross it."""
    for k in range(int(rng.integers(2, 4))):
        radius = rng.uniform(28, 45) * look.scale
        y, x = cy + rng.normal(0, 0.5 * radius), cx + rng.normal(0, 0.5 * radius)
        cyto = _shape(rng, y, x, radius, rng.uniform(0.6, 1.0), irregular=0.08, jitter=0.15, n=int(rng.integers(6, 10)))
        nucleus = None if k == 0 or rng.random() < 0.5 else _nucleus(rng, y, x, rng.uniform(4.5, 7.0) * look.scale, False)
        _draw_cell(rng, cv, look, cyto, _cyto_od(rng, look.stains, rng.uniform(0.35, 0.7)), nucleus,
                   folds=int(rng.integers(1, 3)))


def _folded_corner(rng, cv: _Canvas, look: Look, cy: float, cx: float) -> None:
    """A corner of cytoplasm folded over: a small dense patch, nucleus-sized, of cytoplasm colour."""
    patch = _shape(rng, cy, cx, rng.uniform(4.0, 9.0) * look.scale, rng.uniform(0.4, 0.8), irregular=0.15, n=8)
    win = cv.window(patch, margin=3)
    if win is None or cv.labels[win[0]:win[2], win[1]:win[3]].any():
        return
    dens = ndimage.gaussian_filter(_raster(patch, win), 0.8) * rng.uniform(0.8, 1.6)
    cv.add(win, dens[..., None] * _cyto_od(rng, look.stains, 1.0, keratin=0.5))


def _clump(rng, cv: _Canvas, look: Look, cy: float, cx: float) -> None:
    """Nucleus-sized debris stained like chromatin: irregular, mottled, sharp-edged."""
    shape = _shape(rng, cy, cx, rng.uniform(3.5, 9.0) * look.scale, rng.uniform(0.5, 1.0), irregular=0.35, n=14)
    win = cv.window(shape, margin=3)
    if win is None or cv.labels[win[0]:win[2], win[1]:win[3]].any():
        return
    mask = _raster(shape, win)
    dens = mask * rng.uniform(0.6, 1.4) * (1 + 0.5 * _smooth_noise(rng, mask.shape, 1.5))
    cv.add(win, np.clip(dens, 0, None)[..., None] * np.asarray(look.stains.hematoxylin, np.float32))


def _look_alikes(rng, cv: _Canvas, look: Look, area: float) -> None:
    """The small unlabelled look-alikes of `make_scene(hard_negatives=True)`, drawn where they hide no
    labelled nucleus (see the module docstring)."""
    h, w = cv.shape
    for p in _spread(rng, rng.poisson(4.0 * area), h, w, 0, 0):
        _folded_corner(rng, cv, look, *p)
    for p in _spread(rng, rng.poisson(4.0 * area), h, w, 0, 0):
        _clump(rng, cv, look, *p)
    if rng.random() < 0.4:  # a sheet of inflammatory cells
        centre = np.array([rng.uniform(0, h), rng.uniform(0, w)])
        for _ in range(int(rng.integers(8, 30))):
            _neutrophil(rng, cv, look, *(centre + rng.normal(0, 25, 2)))


def _spread(rng, n: int, h: int, w: int, min_dist: float, pad: float) -> list[np.ndarray]:
    """Up to n points in the (padded) field, kept min_dist apart where possible."""
    pts: list[np.ndarray] = []
    for _ in range(n * 30):
        if len(pts) == n:
            break
        p = np.array([rng.uniform(-pad, h + pad), rng.uniform(-pad, w + pad)])
        if all(np.hypot(*(p - q)) >= min_dist for q in pts):
            pts.append(p)
    return pts


def _finish(rng, cv: _Canvas, look: Look) -> np.ndarray:
    """Glass with illumination gradient, Beer-Lambert transmission, optics blur, noise -> uint8."""
    h, w = cv.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    ramp = ((yy / h - 0.5) * np.sin(a) + (xx / w - 0.5) * np.cos(a)) * rng.uniform(0.04, 0.12)
    vignette = 0.05 * (((yy / h - 0.5) ** 2 + (xx / w - 0.5) ** 2) * 2)
    uneven = 0.02 * _smooth_noise(rng, (h, w), max(h, w) / 12)
    light = (1 - ramp - vignette + uneven)[..., None] * np.asarray(look.stains.background, np.float32)
    haze = np.clip(_smooth_noise(rng, (h, w), 6), 0, None)[..., None] * 0.012 * np.asarray(look.stains.pink, np.float32)
    img = light * np.exp(-(cv.od + haze))
    img = ndimage.gaussian_filter(img, (look.blur, look.blur, 0))
    img += rng.normal(0, look.noise, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_scene(
    rng: np.random.Generator, scene: str = "mixed", shift: bool = False, size: tuple[int, int] = (256, 256),
    hard_negatives: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic field: (RGB uint8 (H, W, 3), nucleus labels uint16 (H, W), 0 = background);
    `hard_negatives` adds unlabelled look-alikes of nuclei (see the module docstring)."""
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {SCENES}, got {scene!r}")
    if scene == "mixed":
        scene = "patch" if rng.random() < 0.5 else "cluster"
    h, w = int(size[0]), int(size[1])
    look = _look(rng, shift)
    cv = _Canvas(h, w)
    area = h * w / (256 * 256) / look.scale**2  # how many base-size fields fit

    for _ in range(int(rng.integers(0, 3))):
        _mucus(rng, cv, look)
    if hard_negatives:  # stacked squames first: the labelled cells lie on top of them
        for p in _spread(rng, rng.poisson(1.0 * area), h, w, 0, 10 * look.scale):
            _stacked_squames(rng, cv, look, *p)
    n_squamous = rng.integers(4, 8) if scene == "patch" else rng.integers(2, 5)
    for p in _spread(rng, max(1, round(n_squamous * area)), h, w, 45 * look.scale, 20 * look.scale):
        kind = "koilocyte" if rng.random() < 0.12 else "normal"
        _squamous(rng, cv, look, *p, kind)
    if scene == "cluster":
        n_groups = max(1, round(rng.integers(1, 3) * area))
        for p in _spread(rng, n_groups, h, w, 90 * look.scale, -30 * look.scale):
            _cluster(rng, cv, look, *p, int(rng.integers(8, 22)))
    n_single = rng.poisson(0.8 * area)
    for p in _spread(rng, n_single, h, w, 30, -10):
        _high_grade(rng, cv, look, *p)
    for p in _spread(rng, rng.poisson(4 * area), h, w, 0, 0):
        if rng.random() < 0.6:
            _red_cell(rng, cv, look, *p)
    for p in _spread(rng, rng.poisson(1.5 * area), h, w, 0, 0):  # inflammatory groups
        for _ in range(int(rng.integers(1, 6))):
            _neutrophil(rng, cv, look, *(p + rng.normal(0, 12, 2)))
    _debris(rng, cv, look)
    if hard_negatives:
        _look_alikes(rng, cv, look, area)
    return _finish(rng, cv, look), cv.labels


def touching_fraction(labels: np.ndarray) -> float:
    """Fraction of labelled nuclei that share an 8-connected border with another nucleus."""
    n = len(np.unique(labels[labels > 0]))
    if n == 0:
        return 0.0
    touching = []
    for a, b in (
        (labels[:, :-1], labels[:, 1:]),
        (labels[:-1, :], labels[1:, :]),
        (labels[:-1, :-1], labels[1:, 1:]),
        (labels[:-1, 1:], labels[1:, :-1]),
    ):
        m = (a != b) & (a > 0) & (b > 0)
        touching += [a[m], b[m]]
    return len(np.unique(np.concatenate(touching))) / n


def _overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    out = image.copy()
    out[find_boundaries(labels, mode="inner")] = (255, 230, 0)
    return out


def _preview(tiles: list[tuple[np.ndarray, np.ndarray]], cols: int = 4) -> np.ndarray:
    """Mosaic: scenes on top, the same scenes with nucleus outlines below (4-px white gaps)."""
    h, w = tiles[0][0].shape[:2]
    cols = min(cols, len(tiles))
    gap = 4
    rows = [[img for img, _ in tiles[:cols]], [_overlay(img, lab) for img, lab in tiles[:cols]]]
    out = np.full((2 * h + gap, cols * w + (cols - 1) * gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tile
    return out


def make_dataset(
    out_dir: str | os.PathLike,
    n_train: int = 100,
    n_val: int = 10,
    n_test: int = 20,
    scene: str = "mixed",
    shift: bool = False,
    seed: int = 0,
    size: int = 256,
) -> Path:
    """Write a synthetic dataset; the same arguments always give byte-identical files.

    out_dir/images/{split}_{i:04d}.png; train.json (boxes only, what a user annotates);
    train_full.json, val.json, test.json (RLE masks); preview.png.
    """
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {SCENES}, got {scene!r}")
    out = Path(out_dir)
    splits = [("train", n_train), ("val", n_val), ("test", n_test)]
    docs = {name: ([], []) for name, _ in splits}
    tiles = []
    # disable=None: a progress bar on a terminal, none when the output is captured
    with tqdm(total=sum(n for _, n in splits), desc="synthesising scenes", unit="img", disable=None) as bar:
        for split_index, (name, n) in enumerate(splits):
            images, annotations = docs[name]
            for i in range(n):
                rng = np.random.default_rng([seed, split_index, i])
                image, labels = make_scene(rng, scene=scene, shift=shift, size=(size, size))
                file_name = f"{name}_{i:04d}.png"
                write_png(out / "images" / file_name, image)
                image_id = i + 1
                images.append({"id": image_id, "file_name": file_name, "height": size, "width": size})
                annotations += label_map_to_annotations(labels, image_id, first_ann_id=len(annotations) + 1)
                if len(tiles) < 4:
                    tiles.append((image, labels))
                bar.update(1)
    for name, (images, annotations) in docs.items():
        write_coco(out / f"{name}.json" if name != "train" else out / "train_full.json", images, annotations)
    boxes_only = [{k: v for k, v in a.items() if k != "segmentation"} for a in docs["train"][1]]
    for a in boxes_only:
        a["area"] = a["bbox"][2] * a["bbox"][3]
    write_coco(out / "train.json", docs["train"][0], boxes_only)
    if tiles:
        write_png(out / "preview.png", _preview(tiles))
    return out
