"""Training views of a sample for pre-training: a rescaled crop, turned and recoloured.

`random_view` takes an (image, instance map) pair to a `size` x `size` crop:
- scale: a factor drawn log-uniformly from `scale_range` (0.5-2 x by default) of the image's own
  scale, or of the scale at which its median nucleus is `reference` pixels across, narrowed so
  that the median nucleus ends up between `MIN_NUCLEUS_PX` and `MAX_NUCLEUS_PX` across;
- geometry: the crop's place, a flip and a quarter turn (image and labels together);
- colour (`recolour`): a dark-background (fluorescence) image is inverted half the time, so that it
  looks like a bright-field one; the stain is jittered in haematoxylin-eosin-DAB space (HED:
  Ruifrok and Johnston's colour deconvolution, scikit-image's stain matrices, without clipping the
  stains, so that colours outside H&E's, fluorescent dyes', survive unchanged); sometimes grey; then
  brightness, contrast and gamma, blur and noise.
Labels are resampled by nearest neighbour, so instance ids stay exact.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.color import hed_from_rgb, rgb_from_hed

SCALE_RANGE = (0.5, 2.0)
MIN_NUCLEUS_PX = 6.0
MAX_NUCLEUS_PX = 72.0
DARK_BACKGROUND = 60      # a median brightness below this is a dark-field (fluorescence) image
P_INVERT_DARK = 0.5
P_HED = 0.8
P_GREY = 0.15
P_BLUR = 0.25
P_NOISE = 0.3


def median_nucleus_side(labels: np.ndarray) -> float:
    """The median of sqrt(area) over the nuclei of an instance map (0 when there are none)."""
    counts = np.bincount(labels.ravel())[1:]
    counts = counts[counts > 0]
    return float(np.sqrt(np.median(counts))) if len(counts) else 0.0


def draw_scale(rng: np.random.Generator, nucleus_side: float, scale_range=SCALE_RANGE,
               reference: float | None = None) -> float:
    """A log-uniform factor in `scale_range`, narrowed to keep the median nucleus a workable size.

    reference: when given (pixels), the range is around the factor that brings the median nucleus
    to that size, not around the image's own scale: every dataset is seen at nucleus sizes of
    reference x 0.5-2, whatever its magnification."""
    base = reference / nucleus_side if reference and nucleus_side > 0 else 1.0
    low, high = np.log(base * scale_range[0]), np.log(base * scale_range[1])
    if nucleus_side > 0:
        low = max(low, np.log(MIN_NUCLEUS_PX / nucleus_side))
        high = min(high, np.log(MAX_NUCLEUS_PX / nucleus_side))
    if low > high:  # nuclei too small or too large for the whole range: the nearest workable factor
        low = high = low if nucleus_side * np.exp(low) > MAX_NUCLEUS_PX else high
    return float(np.exp(rng.uniform(low, high)))


def resampled_crop(image: np.ndarray, labels: np.ndarray, top: float, left: float, scale: float, size: int):
    """The `size` x `size` crop whose pixel (0, 0) starts at (top, left) of the image and which
    shows `1/scale` image pixels per crop pixel; beyond the image: the image's median colour, label 0."""
    height, width = labels.shape
    span = size / scale
    y0, x0 = int(np.floor(top)), int(np.floor(left))
    y1, x1 = int(np.ceil(top + span)) + 1, int(np.ceil(left + span)) + 1
    region = image[max(y0, 0):min(y1, height), max(x0, 0):min(x1, width)]
    fill = np.median(image.reshape(-1, 3), axis=0).astype(np.uint8)
    padded = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
    padded[:] = fill
    padded[max(y0, 0) - y0:max(y0, 0) - y0 + region.shape[0], max(x0, 0) - x0:max(x0, 0) - x0 + region.shape[1]] = region
    # PIL's box transform: crop pixel centres sampled at their place in the padded region
    box = (left - x0, top - y0, left - x0 + span, top - y0 + span)
    out = np.asarray(Image.fromarray(padded).resize((size, size), Image.BILINEAR, box=box))
    rows = np.floor(top + (np.arange(size) + 0.5) / scale).astype(np.int64)
    cols = np.floor(left + (np.arange(size) + 0.5) / scale).astype(np.int64)
    inside_r, inside_c = (rows >= 0) & (rows < height), (cols >= 0) & (cols < width)
    crop_labels = np.zeros((size, size), labels.dtype)
    crop_labels[np.ix_(inside_r, inside_c)] = labels[np.ix_(rows[inside_r], cols[inside_c])]
    return np.ascontiguousarray(out), crop_labels


def random_view(rng: np.random.Generator, image: np.ndarray, labels: np.ndarray, size: int,
                scale_range=SCALE_RANGE, colour: bool = True, reference: float | None = None):
    """A random training crop (image, labels) of `size` x `size` (see the module docstring)."""
    scale = draw_scale(rng, median_nucleus_side(labels), scale_range, reference)
    span = size / scale
    height, width = labels.shape
    top = rng.uniform(min(0.0, height - span), max(0.0, height - span))
    left = rng.uniform(min(0.0, width - span), max(0.0, width - span))
    crop, crop_labels = resampled_crop(image, labels, top, left, scale, size)
    turns = int(rng.integers(4))
    crop, crop_labels = np.rot90(crop, turns), np.rot90(crop_labels, turns)
    if rng.random() < 0.5:
        crop, crop_labels = crop[:, ::-1], crop_labels[:, ::-1]
    crop = np.ascontiguousarray(crop)
    if colour:
        crop = recolour(rng, crop)
    return crop, np.ascontiguousarray(crop_labels)


def hed_jitter(rng: np.random.Generator, image: np.ndarray, sigma: float = 0.3, bias: float = 0.05) -> np.ndarray:
    """Scale and shift each stain (haematoxylin, eosin, DAB) of an RGB uint8 image by a random
    amount, in optical density (the identity when nothing is scaled or shifted)."""
    density = -np.log(np.maximum(image.astype(np.float64) / 255.0, 1e-3))
    stains = density @ hed_from_rgb
    stains = stains * rng.uniform(1 - sigma, 1 + sigma, 3) + rng.uniform(-bias, bias, 3)
    rgb = np.exp(-(stains @ rgb_from_hed))
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def recolour(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Photometric augmentation of an RGB uint8 image (see the module docstring)."""
    out = image
    if np.median(out.mean(axis=2)) < DARK_BACKGROUND and rng.random() < P_INVERT_DARK:
        out = 255 - out
    if rng.random() < P_HED:
        out = hed_jitter(rng, out)
    values = out.astype(np.float32) / 255.0
    if rng.random() < P_GREY:
        values = np.repeat(values.mean(axis=2, keepdims=True), 3, axis=2)
    values = values * rng.uniform(0.8, 1.2) + rng.uniform(-0.08, 0.08)   # contrast, brightness
    values = np.clip(values, 0, 1) ** np.exp(rng.uniform(-0.3, 0.3))     # gamma
    if rng.random() < P_BLUR:
        sigma = rng.uniform(0.3, 1.5)
        values = ndimage.gaussian_filter(values, (sigma, sigma, 0))
    if rng.random() < P_NOISE:
        values = values + rng.normal(0, rng.uniform(0.005, 0.04), values.shape).astype(np.float32)
    return (np.clip(values, 0, 1) * 255 + 0.5).astype(np.uint8)
